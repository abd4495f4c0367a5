//! The embedded 8x8 handwritten digits (1797 samples, 64 features in `[0, 1]`, 10 classes;
//! see [`fedra_client::data::digits`]) as a simulated federation.
//!
//! [`digits_clients`] works in three seeded steps, each on its own ChaCha8 sub-stream of
//! the caller's seed:
//!
//! 1. carve a **central test set** of [`DIGITS_CENTRAL_TEST_FRACTION`] of all samples
//!    (`round(0.2 · 1797) = 359`), which no client ever sees — the server-side evaluation
//!    set;
//! 2. spread the remaining samples over the clients with [`partition`] and the caller's
//!    [`Partition`] scheme (IID, Dirichlet(α) label skew, or shards);
//! 3. split each client's part into its local `train` and `test` (held-out) parts with
//!    [`Dataset::split_holdout`] (`round(len · test_fraction)` rows, at least one, test).
//!
//! A part needs two samples to be split. A very skewed Dirichlet draw (small α, many
//! clients) can leave a client one sample (with α = 0.1 on digits: 4 of 50 seeds at 10
//! clients, 18 of 50 at 20, 46 of 50 at 50), so between steps 2 and 3 a part with fewer than
//! two samples is topped up with the last sample of the currently largest part (ties: the
//! lowest index), the same repair `partition` applies to empty parts. Other schemes never
//! need it; for them the parts are exactly `partition`'s.
//!
//! Every sample lands in exactly one of: the central test set, one client's `train`, one
//! client's `test`. Names: `digits.central-test`, `digits.part<i>` (train) and
//! `digits.part<i>.test`.

use fedra_client::data::digits::load_digits;
use fedra_client::data::partition::{Partition, partition};
use fedra_client::data::split::MAX_HOLDOUT_FRACTION;
use fedra_client::data::{DataError, Dataset};

use super::{ClientData, sub_seed};

/// The fraction of the digits kept aside as the central test set.
pub const DIGITS_CENTRAL_TEST_FRACTION: f64 = 0.2;

/// The digits spread over `clients` clients as `scheme` says, each client's part split into
/// train and a local test part of `test_fraction`, plus the central test set. Deterministic
/// given `seed`.
///
/// # Errors
/// [`DataError::HoldoutFraction`] when `test_fraction` is not in `(0, 0.9]` (every client
/// needs a local test part); [`DataError::Partition`] when there are fewer than two
/// non-central samples per client (more than 719 clients) or `partition` rejects the request
/// (0 clients, a bad α or shard count).
pub fn digits_clients(
    clients: usize,
    scheme: Partition,
    seed: u64,
    test_fraction: f64,
) -> Result<(Vec<ClientData>, Dataset), DataError> {
    if !(test_fraction > 0.0 && test_fraction <= MAX_HOLDOUT_FRACTION) {
        return Err(DataError::HoldoutFraction { name: "digits".into(), fraction: test_fraction });
    }
    let (pool, central) = load_digits()?.split_holdout(DIGITS_CENTRAL_TEST_FRACTION, sub_seed(seed, 0))?;
    let mut central = central.expect("a positive fraction always yields a holdout");
    central.name = format!("{}.central-test", pool.name);
    if pool.len() < clients.saturating_mul(2) {
        return Err(DataError::Partition {
            name: pool.name.clone(),
            message: format!("{} samples cannot give each of {clients} clients a train and a test sample", pool.len()),
        });
    }
    let mut parts = partition(&pool, clients, scheme, sub_seed(seed, 1))?;
    top_up(&mut parts, 2);
    let clients = parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let (train, test) = part.split_holdout(test_fraction, sub_seed(seed, 2 + i as u64))?;
            let mut test = test.expect("a positive fraction always yields a holdout");
            test.name = format!("{}.test", train.name);
            Ok(ClientData { train, test })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    Ok((clients, central))
}

/// Moves samples into every part smaller than `min` from the currently largest part (its
/// last row; ties go to the lowest index). The caller ensures `min` samples per part exist.
fn top_up(parts: &mut [Dataset], min: usize) {
    for small in 0..parts.len() {
        while parts[small].len() < min {
            let donor = (0..parts.len())
                .max_by_key(|&c| (parts[c].len(), std::cmp::Reverse(c)))
                .expect("partition returns at least one part");
            debug_assert!(donor != small && parts[donor].len() > min, "enough samples were checked");
            let dim = parts[donor].dim;
            let label = parts[donor].labels.pop().expect("the largest part is not empty");
            let at = parts[donor].features.len() - dim;
            let row = parts[donor].features.split_off(at);
            parts[small].features.extend_from_slice(&row);
            parts[small].labels.push(label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{histogram, mean_tv_from_pooled};
    use super::*;
    use fedra_client::data::digits::DIGITS_SAMPLES;

    /// Every row as a sortable key (label, feature bits): a multiset comparison survives
    /// duplicate images in the source.
    fn keys<'a>(parts: impl IntoIterator<Item = &'a Dataset>) -> Vec<(u32, Vec<u32>)> {
        let mut k: Vec<(u32, Vec<u32>)> = parts
            .into_iter()
            .flat_map(|d| (0..d.len()).map(move |i| (d.labels[i], d.row(i).iter().map(|v| v.to_bits()).collect())))
            .collect();
        k.sort_unstable();
        k
    }

    fn assert_exact_cover(clients: &[ClientData], central: &Dataset) {
        let all = load_digits().unwrap();
        let used = keys(clients.iter().flat_map(|c| [&c.train, &c.test]).chain([central]));
        assert_eq!(used.len(), DIGITS_SAMPLES);
        assert_eq!(used, keys([&all]), "every sample exactly once");
    }

    #[test]
    fn iid_clients_cover_every_sample_once() {
        let (clients, central) = digits_clients(10, Partition::Iid, 1, 0.2).unwrap();
        assert_eq!(clients.len(), 10);
        assert_eq!(central.len(), 359);
        assert_eq!(central.name, "digits.central-test");
        assert_eq!(
            (clients[3].train.name.as_str(), clients[3].test.name.as_str()),
            ("digits.part3", "digits.part3.test")
        );
        for c in &clients {
            // 1438 / 10 → parts of 143 or 144; 20% of those held out.
            assert!(matches!(c.len(), 143 | 144), "{}", c.len());
            assert_eq!(c.test.len(), (c.len() as f64 * 0.2).round() as usize);
            assert_eq!((c.train.dim, c.train.classes), (64, 10));
        }
        assert_exact_cover(&clients, &central);
    }

    #[test]
    fn many_clients_and_every_scheme_work() {
        for (clients, scheme) in
            [(20, Partition::Iid), (16, Partition::Dirichlet { alpha: 0.5 }), (12, Partition::Shards { per_client: 2 })]
        {
            let (parts, central) = digits_clients(clients, scheme, 7, 0.1).unwrap();
            assert_eq!(parts.len(), clients, "{scheme:?}");
            assert!(parts.iter().all(|c| !c.train.is_empty() && !c.test.is_empty()));
            assert_exact_cover(&parts, &central);
        }
    }

    #[test]
    fn deterministic_given_seed() {
        let scheme = Partition::Dirichlet { alpha: 0.5 };
        let (a, ca) = digits_clients(10, scheme, 3, 0.2).unwrap();
        let (b, cb) = digits_clients(10, scheme, 3, 0.2).unwrap();
        assert_eq!(keys([&ca]), keys([&cb]));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.train.labels, y.train.labels);
            assert_eq!(x.train.features, y.train.features);
            assert_eq!(x.test.features, y.test.features);
        }
        let (c, _) = digits_clients(10, scheme, 4, 0.2).unwrap();
        assert!(a.iter().zip(&c).any(|(x, y)| x.train.labels != y.train.labels), "another seed, other parts");
    }

    #[test]
    fn dirichlet_skews_label_histograms() {
        let tv = |scheme| {
            let (clients, _) = digits_clients(10, scheme, 11, 0.2).unwrap();
            let hist: Vec<Vec<usize>> = clients
                .iter()
                .map(|c| histogram(&c.train).iter().zip(histogram(&c.test)).map(|(a, b)| a + b).collect())
                .collect();
            mean_tv_from_pooled(&hist)
        };
        let (skewed, iid) = (tv(Partition::Dirichlet { alpha: 0.1 }), tv(Partition::Iid));
        assert!(skewed > 0.5, "Dirichlet(0.1) mean TV {skewed}");
        assert!(iid < 0.15, "IID mean TV {iid}");
    }

    #[test]
    fn very_skewed_dirichlet_still_gives_every_client_both_parts() {
        // Dirichlet(0.1) over 50 clients leaves some client a single sample for most seeds.
        for seed in 0..3 {
            let (parts, central) = digits_clients(50, Partition::Dirichlet { alpha: 0.1 }, seed, 0.2).unwrap();
            assert_eq!(parts.len(), 50);
            assert!(parts.iter().all(|c| !c.train.is_empty() && !c.test.is_empty()));
            assert_exact_cover(&parts, &central);
        }
        assert!(matches!(digits_clients(720, Partition::Iid, 1, 0.2), Err(DataError::Partition { .. })));
        assert!(digits_clients(719, Partition::Iid, 1, 0.2).is_ok());
    }

    #[test]
    fn bad_test_fractions_are_rejected() {
        for bad in [0.0, -0.1, 0.95, f64::NAN] {
            let e = digits_clients(10, Partition::Iid, 1, bad).unwrap_err();
            assert!(matches!(e, DataError::HoldoutFraction { .. }), "{e}");
        }
        assert!(matches!(digits_clients(0, Partition::Iid, 1, 0.2), Err(DataError::Partition { .. })));
    }
}
