//! The accountant against reference values from TF-Privacy, dp_accounting, SciPy and
//! Steinke's `cdp2adp.py`, plus proptests of monotonicity (more rounds, a higher sampling
//! rate or less noise never lowers `ε`).

use std::f64::consts::LN_2;

use proptest::prelude::*;

use super::conversion::{classic_epsilon_at, improved_epsilon_at};
use super::erfc::ln_erfc;
use super::*;

fn assert_rel(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let error = ((actual - expected) / expected).abs();
    assert!(error <= tolerance, "{what}: got {actual}, expected {expected} (relative error {error:e})");
}

/// `ln(erfc(x))` from SciPy 1.x as `math.log(2) + scipy.special.log_ndtr(-x * 2**0.5)`
/// (the expression TF-Privacy and dp_accounting use).
const LN_ERFC_REFERENCE: [(f64, f64); 17] = [
    (-30.0, LN_2), // 0.6931471805599453
    (-3.0, 0.6931361352504468),
    (-1.0, 0.6112323176780705),
    (-0.5, 0.4190391477755596),
    (0.0, 0.0),
    (0.2, -0.25193223378261687),
    (0.5, -0.7350111298370848),
    (1.0, -1.849605509933249),
    (1.3, -2.718220922090385),
    (2.0, -5.36494126461664),
    (3.0, -10.720363041981116),
    (5.0, -27.200889545537446),
    (10.0, -102.87988902484493),
    (27.0, -732.8688865078977),
    (30.0, -903.9741171106442),
    (100.0, -10005.177585122668),
    (1e4, -100000009.78270535),
];

#[test]
fn ln_erfc_matches_scipy_far_into_the_tail() {
    for (x, expected) in LN_ERFC_REFERENCE {
        let actual = ln_erfc(x);
        if expected == 0.0 {
            assert!(actual.abs() < 1e-15, "ln_erfc({x}) = {actual}");
        } else {
            assert_rel(actual, expected, 1e-13, &format!("ln_erfc({x})"));
        }
    }
}

/// `(q, z, α, TF-Privacy value, dp_accounting 0.6 value)`. Produced with Python 3,
/// NumPy/SciPy: column 4 by `compute_rdp(q, z, 1, [α])[0]` from
/// `tensorflow_privacy/privacy/analysis/rdp_accountant.py` of the tensorflow-privacy 0.8.0
/// wheel (imported on its own, it needs only numpy and scipy); column 5 by
/// `dp_accounting.rdp.rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, z, [α])[0]`
/// of `pip install dp-accounting==0.6.0`. The two agree at integer orders; at fractional
/// orders dp_accounting 0.6 sums absolute values of the series terms (an upper bound)
/// and gives up (`inf`) after 1000 terms where TF-Privacy's signed series converges.
const RDP_REFERENCE: [(f64, f64, f64, f64, f64); 16] = [
    (0.01, 1.0, 1.25, 0.00010539800476989044, 0.00011183742349322766),
    (0.01, 1.0, 1.5, 0.00012725374351154145, 0.00013236850293993048),
    (0.01, 1.0, 1.75, 0.0001493888473141526, 0.00015235358208496043),
    (0.01, 1.0, 2.0, 0.00017181342207453428, 0.00017181342207455162),
    (0.01, 1.0, 2.5, 0.00021757533233085147, 0.00021777202424064354),
    (0.01, 1.0, 32.0, 11.246275937048072, 11.246275937048072),
    (0.01, 1.0, 256.0, 123.37677032308648, 123.37677032308648),
    (0.1, 0.8, 1.75, 0.02952068792909264, 0.031908760530802174),
    (0.1, 0.8, 7.0, 2.7832989402798733, 2.7832989402798733),
    (0.1, 0.8, 10.5, 5.658166086532975, 5.658166086532975),
    (0.001, 2.0, 3.3, 4.6883114511393103e-07, 4.6883114391609426e-07),
    (0.001, 2.0, 64.0, 0.9827446359630388, 0.9827446359630388),
    (0.5, 1.5, 4.5, 0.4039276952706194, 0.40396826236136774),
    (0.5, 1.5, 20.0, 3.7150424811389056, 3.7150424811389056),
    (0.3, 1.2, 1.1, 0.04051759863247458, f64::INFINITY),
    (0.05, 3.0, 1024.0, 53.89022823579086, 53.89022823579086),
];

#[test]
fn sampled_gaussian_rdp_matches_tf_privacy_at_integer_and_fractional_orders() {
    for (q, z, alpha, tf_privacy, dp_accounting) in RDP_REFERENCE {
        let actual = sampled_gaussian_rdp(q, z, alpha).unwrap();
        // 1e-8: at tiny values (4.7e-7) the references' own rounding shows at 3e-9.
        assert_rel(actual, tf_privacy, 1e-8, &format!("rdp(q={q}, z={z}, alpha={alpha})"));
        // The exact series never exceeds dp_accounting's absolute-value bound (up to
        // their different stopping rules, a few 1e-9 relative).
        assert!(actual <= dp_accounting * (1.0 + 1e-8), "rdp(q={q}, z={z}, alpha={alpha}) = {actual}");
    }
}

#[test]
fn full_sampling_reduces_to_the_gaussian_curve() {
    for (z, alpha) in [(0.5, 1.5), (1.0, 2.0), (3.0, 37.0), (10.0, 1024.0)] {
        assert_eq!(sampled_gaussian_rdp(1.0, z, alpha).unwrap(), alpha / (2.0 * z * z));
    }
    let cost = RoundCost::sampled_gaussian(1.0, 2.0).unwrap();
    assert_eq!(cost.rho(), Some(0.125));
    assert_eq!(cost, RoundCost::gaussian(0.125));
}

/// `(q, z, rounds, δ, ε, best order)`: ε from TF-Privacy 0.8.0's
/// `get_privacy_spent(O, compute_rdp(q, z, rounds, O), target_delta=δ)` with
/// `O = dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS` (our
/// [`default_orders`]). For comparison, dp_accounting 0.6's
/// `RdpAccountant().compose(PoissonSampledDpEvent(q, GaussianDpEvent(z)), rounds)` then
/// `get_epsilon_and_optimal_order(δ)` gives 2.101366525420273 (7.8),
/// 5.786639935177136 (5.0), 2.024673098712383 (6.1), 3.6797458455819205 (6.0) and
/// 12.561722410715099 (2.7): equal at integer optimal orders, slightly larger where a
/// fractional order wins (its absolute-value series, see `RDP_REFERENCE`).
const EPSILON_REFERENCE: [(f64, f64, u32, f64, f64, f64, f64); 5] = [
    (0.01, 1.0, 1000, 1e-5, 2.1013652716430564, 7.8, 2.101366525420273),
    (0.05, 1.3, 500, 1e-6, 5.78663993517711, 5.0, 5.786639935177136),
    (0.001, 0.7, 10000, 1e-5, 2.024672903782695, 6.1, 2.024673098712383),
    (0.1, 2.0, 200, 1e-5, 3.6797458455819294, 6.0, 3.6797458455819205),
    (0.3, 1.2, 50, 1e-5, 12.469135062099836, 2.6, 12.561722410715099),
];

#[test]
fn sampled_rounds_match_tf_privacy_and_dp_accounting_epsilon() {
    for (q, z, rounds, delta, expected, expected_order, dp_accounting) in EPSILON_REFERENCE {
        let cost = Accountant::PoissonRdp.round_cost(q, z).unwrap();
        let report = epsilon(&vec![cost; rounds as usize], delta).unwrap();
        let what = format!("epsilon(q={q}, z={z}, rounds={rounds}, delta={delta})");
        assert_rel(report.epsilon, expected, 1e-7, &what);
        assert_eq!(report.rdp_order, expected_order, "{what}");
        assert_eq!(report.bound, EpsilonBound::Rdp);
        assert_eq!(report.total_rho, None);
        assert_eq!(report.rounds, rounds as usize);
        assert!(report.epsilon <= dp_accounting * (1.0 + 1e-8), "{what}");
        assert_rel(report.epsilon, dp_accounting, 1e-2, &what);
    }
}

#[test]
fn issue_reference_two_point_one() {
    // q = 0.01, z = 1.0, 1000 rounds, δ = 1e-5: the issue quotes ε ≈ 2.1.
    let report = epsilon(&vec![RoundCost::sampled_gaussian(0.01, 1.0).unwrap(); 1000], 1e-5).unwrap();
    assert!((report.epsilon - 2.1).abs() < 0.01, "{report:?}");
}

#[test]
fn composed_curve_is_the_repeated_curve() {
    let curve = RdpCurve::sampled_gaussian(0.02, 1.1).unwrap();
    let mut composed = RdpCurve::zero();
    for _ in 0..7 {
        composed = composed.compose(&curve).unwrap();
    }
    let repeated = curve.repeated(7);
    for (a, b) in composed.values().iter().zip(repeated.values()) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
}

/// `(ρ, δ, ε)` from Thomas Steinke's `cdp2adp.py` (`cdp_eps(rho, delta)`,
/// github.com/IBM/discrete-gaussian-differential-privacy, the code OpenDP's `cdp_delta`
/// is derived from), run in plain Python 3.
const ZCDP_REFERENCE: [(f64, f64, f64); 5] = [
    (0.5, 1e-5, 4.728386984943314),
    (0.05, 1e-6, 1.471594750532416),
    (2.0, 1e-5, 10.724824112939174),
    (0.02, 1e-5, 0.7943147742740684),
    (10.0, 1e-8, 35.9533186075207),
];

#[test]
fn zcdp_epsilon_matches_steinke_cdp2adp() {
    for (rho, delta, expected) in ZCDP_REFERENCE {
        assert_rel(zcdp_epsilon(rho, delta).unwrap(), expected, 1e-9, &format!("zcdp_epsilon({rho}, {delta})"));
    }
}

#[test]
fn zcdp_epsilon_lies_between_rho_and_the_classic_bound() {
    for rho in [1e-4, 0.01, 0.1, 0.5, 1.0, 5.0, 50.0] {
        for delta in [1e-3, 1e-5, 1e-9] {
            let eps = zcdp_epsilon(rho, delta).unwrap();
            let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
            assert!(eps > rho && eps <= classic, "rho={rho} delta={delta}: {rho} < {eps} <= {classic}");
        }
    }
    assert_eq!(zcdp_epsilon(0.0, 1e-5).unwrap(), 0.0);
}

#[test]
fn opendp_gaussian_rho_is_half_the_squared_sensitivity_to_noise_ratio() {
    for (sensitivity, sigma) in [(1.0, 1.0), (1.0, 0.5), (0.3, 1.7), (2.5, 10.0), (1.0, 1.1)] {
        let expected = (sensitivity / sigma) * (sensitivity / sigma) / 2.0;
        let actual = opendp_gaussian_rho(sensitivity, sigma).unwrap();
        // OpenDP rounds up, never down.
        assert!(actual >= expected * (1.0 - 1e-15), "{sensitivity}/{sigma}: {actual} < {expected}");
        assert_rel(actual, expected, 1e-12, &format!("opendp rho({sensitivity}, {sigma})"));
        assert_rel(actual, gaussian_rho(sigma / sensitivity).unwrap(), 1e-12, "noise multiplier form");
    }
    assert_eq!(opendp_gaussian_rho(0.0, 1.0).unwrap(), 0.0);
}

#[test]
fn zcdp_rounds_compose_by_adding_rho() {
    for (z, rounds) in [(1.0, 1usize), (1.0, 100), (2.5, 40), (0.8, 3)] {
        let costs = vec![Accountant::Zcdp.round_cost(0.01, z).unwrap(); rounds];
        let report = epsilon(&costs, 1e-5).unwrap();
        let total = rounds as f64 / (2.0 * z * z);
        assert_rel(report.total_rho.unwrap(), total, 1e-12, "total rho");
        assert_eq!(report.zcdp_epsilon, Some(zcdp_epsilon(report.total_rho.unwrap(), 1e-5).unwrap()));
        assert_eq!(report.bound, EpsilonBound::Zcdp);
        assert_eq!(report.epsilon, report.zcdp_epsilon.unwrap());
    }
    // 100 rounds at z = 5 is ρ = 2: Steinke's reference 10.724824112939174.
    let report = epsilon(&vec![RoundCost::gaussian_round(5.0).unwrap(); 100], 1e-5).unwrap();
    assert_rel(report.epsilon, 10.724824112939174, 1e-9, "rho = 2");
    // dp_accounting 0.6, RdpAccountant with PoissonSampledDpEvent(1.0, GaussianDpEvent(5.0))
    // composed 100 times, get_epsilon_and_optimal_order(1e-5): 10.725509696418232 at 3.3.
    assert_rel(report.rdp_epsilon, 10.725509696418232, 1e-9, "rdp path at q = 1");
    assert_eq!(report.rdp_order, 3.3);
}

#[test]
fn unsampled_rdp_path_agrees_with_opendp_zcdp_path() {
    for (z, rounds, delta) in
        [(1.0, 1usize, 1e-5), (1.0, 100, 1e-5), (5.0, 100, 1e-5), (2.0, 1000, 1e-6), (0.7, 20, 1e-8), (3.0, 10, 1e-3)]
    {
        let costs = vec![RoundCost::sampled_gaussian(1.0, z).unwrap(); rounds];
        let report = epsilon(&costs, delta).unwrap();
        let zcdp = report.zcdp_epsilon.unwrap();
        let what = format!("z={z} rounds={rounds} delta={delta}: zcdp {zcdp} rdp {}", report.rdp_epsilon);
        // Same conversion formula, continuous optimum versus the order grid.
        assert!(zcdp <= report.rdp_epsilon, "{what}");
        assert!(report.rdp_epsilon <= zcdp * 1.02, "{what}");
    }
}

#[test]
fn improved_conversion_is_never_worse_than_classic() {
    let curve = RdpCurve::sampled_gaussian(0.01, 1.0).unwrap().repeated(1000);
    for delta in [1e-3, 1e-5, 1e-9] {
        let best = curve.epsilon(delta).unwrap();
        for (&order, &value) in curve.orders().iter().zip(curve.values()) {
            assert!(improved_epsilon_at(order, value, delta) <= classic_epsilon_at(order, value, delta));
        }
        let classic = curve
            .orders()
            .iter()
            .zip(curve.values())
            .map(|(&a, &r)| classic_epsilon_at(a, r, delta))
            .fold(f64::INFINITY, f64::min);
        assert!(best.epsilon < classic, "delta={delta}: {} vs {classic}", best.epsilon);
    }
}

#[test]
fn no_rounds_cost_nothing() {
    let report = epsilon(&[], 1e-5).unwrap();
    assert_eq!(report.epsilon, 0.0);
    assert_eq!(report.total_rho, Some(0.0));
}

#[test]
fn mixing_zcdp_and_sampled_rounds_composes_as_rdp() {
    let zcdp = RoundCost::gaussian_round(1.0).unwrap();
    let sampled = RoundCost::sampled_gaussian(0.01, 1.0).unwrap();
    let report = epsilon(&[zcdp.clone(), sampled.clone()], 1e-5).unwrap();
    let expected = zcdp.rdp().compose(sampled.rdp()).unwrap().epsilon(1e-5).unwrap();
    assert_eq!(report.total_rho, None);
    assert_eq!(report.bound, EpsilonBound::Rdp);
    assert_eq!((report.epsilon, report.rdp_order), (expected.epsilon, expected.order));
}

#[test]
fn adaptive_clipping_split_follows_andrew_et_al() {
    // z = 1, σ_b = 1: z_Δ = (1 − 1/4)^(−1/2) = 2/√3.
    let z_delta = split_noise_for_adaptive_clipping(1.0, 1.0).unwrap();
    assert_rel(z_delta, 2.0 / 3f64.sqrt(), 1e-15, "z_delta");
    // Andrew et al.'s recommended σ_b = m/20 for m = 100 expected clients, z = 1.0:
    // z_Δ = (1 − 1/100)^(−1/2) = 1.005037815259212.
    assert_rel(split_noise_for_adaptive_clipping(1.0, 5.0).unwrap(), 1.005037815259212, 1e-15, "m/20");
    for (z, count_stddev) in [(1.0, 1.0), (0.7, 5.0), (1.3, 0.66), (2.0, 1e3)] {
        let z_delta = split_noise_for_adaptive_clipping(z, count_stddev).unwrap();
        let expected = (z.powi(-2) - (2.0 * count_stddev).powi(-2)).powf(-0.5);
        assert_rel(z_delta, expected, 1e-15, "z_delta formula");
        assert!(z_delta > z);
        assert_rel(adaptive_clipping_rho(z_delta, count_stddev), gaussian_rho(z).unwrap(), 1e-12, "recombined rho");
    }
}

#[test]
fn adaptive_clipping_rejects_count_noise_that_spends_the_whole_round() {
    for count_stddev in [0.5, 0.4, 1e-3] {
        let error = split_noise_for_adaptive_clipping(1.0, count_stddev).unwrap_err();
        assert!(matches!(error, AccountingError::CountNoiseTooSmall { .. }), "{error}");
        assert!(error.to_string().contains(&count_stddev.to_string()), "{error}");
    }
    assert!(matches!(
        split_noise_for_adaptive_clipping(1.0, f64::NAN),
        Err(AccountingError::InvalidParameter { name: "count noise stddev", .. })
    ));
}

#[test]
fn invalid_parameters_are_rejected_by_name_and_value() {
    let message = |result: Result<RoundCost, AccountingError>| result.unwrap_err().to_string();
    assert_eq!(message(RoundCost::sampled_gaussian(0.0, 1.0)), "invalid sampling rate = 0: must be in (0, 1]");
    assert!(message(RoundCost::sampled_gaussian(1.5, 1.0)).contains("sampling rate = 1.5"));
    assert!(message(RoundCost::sampled_gaussian(f64::NAN, 1.0)).contains("sampling rate = NaN"));
    assert!(message(RoundCost::sampled_gaussian(0.1, 0.0)).contains("noise multiplier = 0"));
    assert!(message(RoundCost::sampled_gaussian(0.1, f64::INFINITY)).contains("noise multiplier = inf"));
    assert!(message(RoundCost::try_gaussian(-1.0)).contains("rho = -1"));
    for rho in [-1.0, f64::NAN, f64::INFINITY] {
        let error = epsilon(&[RoundCost::gaussian(rho)], 1e-5).unwrap_err();
        assert!(error.to_string().contains(&format!("rho = {rho}")), "{error}");
    }
    assert!(message(RoundCost::gaussian_round(1e-200)).contains("rho = inf"));
    for delta in [0.0, 1.0, -0.1, f64::NAN] {
        let error = epsilon(&[], delta).unwrap_err();
        assert!(error.to_string().starts_with(&format!("invalid delta = {delta}")), "{error}");
        assert!(zcdp_epsilon(0.5, delta).is_err());
    }
    assert!(sampled_gaussian_rdp(0.1, 1.0, 1.0).unwrap_err().to_string().contains("rdp order = 1"));
    assert!(opendp_gaussian_rho(-1.0, 1.0).is_err());
    assert!(opendp_gaussian_rho(1.0, 0.0).is_err());
}

#[test]
fn curves_on_different_orders_do_not_compose() {
    let stored = RdpCurve::new(vec![2.0, 4.0], vec![0.1, 0.2]).unwrap();
    let error = epsilon(&[RoundCost { rho: None, rdp: stored }, RoundCost::gaussian(0.1)], 1e-5).unwrap_err();
    assert!(matches!(error, AccountingError::OrderMismatch { .. }), "{error}");
    assert!(RdpCurve::new(vec![2.0, 2.0], vec![0.1, 0.2]).is_err());
    assert!(RdpCurve::new(vec![1.0], vec![0.1]).is_err());
    assert!(RdpCurve::new(vec![2.0], vec![-0.1]).is_err());
    assert!(RdpCurve::new(vec![2.0], vec![f64::NAN]).is_err());
    assert!(RdpCurve::new(vec![2.0, 3.0], vec![0.1]).is_err());
}

#[test]
fn round_costs_round_trip_through_json_with_infinite_orders_as_null() {
    let cost = RoundCost::sampled_gaussian(0.3, 0.4).unwrap();
    let back: RoundCost = serde_json::from_str(&serde_json::to_string(&cost).unwrap()).unwrap();
    assert_eq!(back, cost, "float_roundtrip keeps every bit");

    // An order without a usable bound is +∞, stored as null, and never chosen.
    let curve = RdpCurve::new(vec![1.5, 2.0, 3.0], vec![f64::INFINITY, 0.3, 0.5]).unwrap();
    let cost = RoundCost { rho: None, rdp: curve };
    let json = serde_json::to_string(&cost).unwrap();
    assert_eq!(json, r#"{"rho":null,"rdp":{"orders":[1.5,2.0,3.0],"values":[null,0.3,0.5]}}"#);
    let back: RoundCost = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cost);
    assert!(back.rdp().epsilon(1e-5).unwrap().order > 1.5);

    let zcdp = RoundCost::gaussian(0.02);
    let back: RoundCost = serde_json::from_str(&serde_json::to_string(&zcdp).unwrap()).unwrap();
    assert_eq!(back, zcdp);

    let bad = r#"{"rho":-0.5,"rdp":{"orders":[2.0],"values":[1.0]}}"#;
    assert!(serde_json::from_str::<RoundCost>(bad).unwrap_err().to_string().contains("rho = -0.5"));
    let bad = r#"{"rho":null,"rdp":{"orders":[2.0,1.5],"values":[1.0,2.0]}}"#;
    assert!(serde_json::from_str::<RoundCost>(bad).is_err());
    let bad = r#"{"rho":null,"rdp":{"orders":[2.0],"values":[1.0],"extra":1}}"#;
    assert!(serde_json::from_str::<RoundCost>(bad).is_err());
}

#[test]
fn accountant_is_snake_case_and_states_its_sampling() {
    assert_eq!(serde_json::to_string(&Accountant::Zcdp).unwrap(), r#""zcdp""#);
    assert_eq!(serde_json::to_string(&Accountant::PoissonRdp).unwrap(), r#""poisson_rdp""#);
    assert_eq!(serde_json::from_str::<Accountant>(r#""poisson_rdp""#).unwrap(), Accountant::PoissonRdp);
    for accountant in [Accountant::Zcdp, Accountant::PoissonRdp] {
        assert_eq!(serde_json::to_string(&accountant).unwrap(), format!("\"{}\"", accountant.as_str()));
        assert_eq!(Accountant::parse(accountant.as_str()), Some(accountant));
    }
    assert_eq!(Accountant::parse("rdp"), None);
    assert!(Accountant::PoissonRdp.sampling_assumption().starts_with("poisson"));
    assert!(Accountant::Zcdp.sampling_assumption().starts_with("none"));
    // Zcdp ignores the sampling rate: no amplification is claimed.
    assert_eq!(Accountant::Zcdp.round_cost(0.01, 1.0).unwrap(), Accountant::Zcdp.round_cost(0.5, 1.0).unwrap());
    assert!(Accountant::Zcdp.round_cost(0.0, 1.0).is_err());
}

#[test]
fn default_orders_are_dp_accountings() {
    let orders = default_orders();
    assert_eq!(orders.len(), 156);
    assert_eq!(&orders[..3], &[1.1, 1.2, 1.3]);
    assert_eq!(orders[98], 10.9);
    assert_eq!(&orders[99..101], &[11.0, 12.0]);
    assert_eq!(&orders[151..], &[63.0, 128.0, 256.0, 512.0, 1024.0]);
}

fn sampled_epsilon(q: f64, z: f64, rounds: u32, delta: f64) -> f64 {
    RdpCurve::sampled_gaussian(q, z).unwrap().repeated(rounds).epsilon(delta).unwrap().epsilon
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn epsilon_grows_with_rounds(q in 1e-3..1.0f64, z in 0.5..5.0f64, rounds in 1u32..500, extra in 1u32..500) {
        let cost = RoundCost::sampled_gaussian(q, z).unwrap();
        let fewer = epsilon(&vec![cost.clone(); rounds as usize], 1e-5).unwrap().epsilon;
        let more = epsilon(&vec![cost; (rounds + extra) as usize], 1e-5).unwrap().epsilon;
        prop_assert!(fewer <= more * (1.0 + 1e-12), "{} > {}", fewer, more);
    }

    #[test]
    fn epsilon_grows_with_sampling_rate(q in 1e-3..0.99f64, factor in 1.01..10.0f64, z in 0.5..5.0f64, rounds in 1u32..1000) {
        let larger = (q * factor).min(1.0);
        let low = sampled_epsilon(q, z, rounds, 1e-5);
        let high = sampled_epsilon(larger, z, rounds, 1e-5);
        prop_assert!(low <= high * (1.0 + 1e-9), "q {} -> {}, q {} -> {}", q, low, larger, high);
    }

    #[test]
    fn epsilon_shrinks_with_noise(q in 1e-3..1.0f64, z in 0.5..5.0f64, factor in 1.01..4.0f64, rounds in 1u32..1000) {
        let noisy = sampled_epsilon(q, z * factor, rounds, 1e-5);
        let less_noisy = sampled_epsilon(q, z, rounds, 1e-5);
        prop_assert!(noisy <= less_noisy * (1.0 + 1e-9), "z {} -> {}, z {} -> {}", z * factor, noisy, z, less_noisy);
    }

    #[test]
    fn rdp_curve_is_non_negative_and_non_decreasing(q in 1e-4..1.0f64, z in 0.3..8.0f64) {
        let curve = RdpCurve::sampled_gaussian(q, z).unwrap();
        prop_assert!(curve.values().iter().all(|v| *v >= 0.0));
        // +∞ marks a non-converged order; the finite bounds must increase with α.
        let finite: Vec<f64> = curve.values().iter().copied().filter(|v| v.is_finite()).collect();
        prop_assert!(finite.len() >= 50);
        for pair in finite.windows(2) {
            prop_assert!(pair[0] <= pair[1] * (1.0 + 1e-9), "{} > {}", pair[0], pair[1]);
        }
    }
}

/// The lattice Gaussian's Poisson path is accounted at integer orders only (see
/// `RoundCost::sampled_lattice_gaussian`): its curve equals the continuous one there, is
/// `+∞` at every fractional order, and its `ε` is never below the continuous accountant's
/// while its optimum lies on an integer order.
#[test]
fn the_lattice_poisson_path_uses_integer_orders_only() {
    let (q, z, delta) = (0.01, 1.1, 1e-5);
    let lattice = RoundCost::sampled_lattice_gaussian(q, z).unwrap();
    let continuous = RoundCost::sampled_gaussian(q, z).unwrap();
    assert_eq!(lattice.rho(), None);
    let (orders, values) = (lattice.rdp.orders(), lattice.rdp.values());
    assert_eq!(orders, continuous.rdp.orders());
    for ((order, l), c) in orders.iter().zip(values).zip(continuous.rdp.values()) {
        if order.fract() == 0.0 {
            assert_eq!(l, c, "order {order}");
        } else {
            assert_eq!(*l, f64::INFINITY, "order {order}");
        }
    }
    let rounds = 1000;
    let e_lattice = epsilon(&vec![lattice; rounds], delta).unwrap();
    let e_continuous = epsilon(&vec![continuous; rounds], delta).unwrap();
    assert_eq!(e_lattice.rdp_order.fract(), 0.0, "{e_lattice:?}");
    assert!(e_lattice.epsilon >= e_continuous.epsilon, "{e_lattice:?} vs {e_continuous:?}");
    // The best continuous order here is fractional: the restriction has a visible price.
    assert!(e_continuous.rdp_order.fract() != 0.0 && e_lattice.epsilon > e_continuous.epsilon);
    // Without sampling it is the plain Gaussian round, with its ρ.
    assert_eq!(RoundCost::sampled_lattice_gaussian(1.0, z).unwrap(), RoundCost::gaussian_round(z).unwrap());
}
