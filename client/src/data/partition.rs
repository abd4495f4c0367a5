//! Splitting one dataset across simulated clients, the way federated-learning papers do.
//!
//! Every client of a simulation loads the same full dataset (e.g. the embedded
//! [digits](super::digits)) and keeps only its own part, so [`partition`] must give every
//! client the same answer: it is a pure function of the dataset, the client count, the
//! scheme and the seed (ChaCha8, portable across platforms). All clients of one federation
//! must therefore use the same seed. The contract, for every scheme:
//!
//! - every sample lands in exactly one part;
//! - there are exactly `clients` parts and none is empty (an error when that is impossible);
//! - the same inputs always give the same parts; part `i` is named `<name>.part<i>`.
//!
//! Schemes ([`Partition`]):
//!
//! - **IID**: a seeded shuffle cut into `clients` parts whose sizes differ by at most one.
//! - **Dirichlet(α)**: label skew as in Hsu et al. 2019 / NIID-Bench — for each class, the
//!   proportions of its samples given to each client are drawn from a symmetric
//!   Dirichlet(α). Small α (0.1) gives each client few classes; large α (100) approaches IID.
//!   A client left empty by the draw receives one sample from the currently largest part, so
//!   the result always has `clients` non-empty parts when there are enough samples.
//! - **Shards**: the pathological split of McMahan et al. 2017 — sort by label (randomly
//!   within a label), cut into `clients * per_client` contiguous shards of near-equal size,
//!   deal `per_client` random shards to each client. A shard spans few labels, so a client
//!   sees at most about `per_client` (+1 per shard boundary) classes.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::{DataError, Dataset};

/// How [`partition`] distributes samples over clients (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partition {
    /// Uniformly at random, near-equal sizes.
    Iid,
    /// Per-class Dirichlet(`alpha`) proportions; `alpha` must be positive and finite.
    Dirichlet { alpha: f64 },
    /// Label-sorted shards, `per_client` (≥ 1) of them per client.
    Shards { per_client: usize },
}

/// Splits `dataset` into `clients` non-empty parts as `scheme` says, deterministically given
/// `seed`.
///
/// # Errors
/// [`DataError::Partition`] when `clients` is 0, the dataset has fewer samples than
/// `clients` (fewer than `clients * per_client` for shards), `alpha` is not positive and
/// finite, or `per_client` is 0.
pub fn partition(dataset: &Dataset, clients: usize, scheme: Partition, seed: u64) -> Result<Vec<Dataset>, DataError> {
    let fail = |message: String| DataError::Partition { name: dataset.name.clone(), message };
    let n = dataset.len();
    if clients == 0 {
        return Err(fail("need at least one client".into()));
    }
    if n < clients {
        return Err(fail(format!("{n} samples cannot give each of {clients} clients at least one")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let parts = match scheme {
        Partition::Iid => iid(n, clients, &mut rng),
        Partition::Dirichlet { alpha } => {
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(fail(format!("dirichlet alpha {alpha} must be a positive finite number")));
            }
            dirichlet(&dataset.labels, dataset.classes, clients, alpha, &mut rng)
        }
        Partition::Shards { per_client } => {
            let shards = clients.checked_mul(per_client).filter(|&s| s > 0 && s <= n).ok_or_else(|| {
                fail(format!("{n} samples cannot make {clients} clients x {per_client} non-empty shards"))
            })?;
            shards_split(&dataset.labels, clients, per_client, shards, &mut rng)
        }
    };
    debug_assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), n);
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, mut rows)| {
            rows.sort_unstable();
            dataset.subset(format!("{}.part{i}", dataset.name), &rows)
        })
        .collect())
}

fn iid(n: usize, clients: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    cut_even(&order, clients).into_iter().map(<[usize]>::to_vec).collect()
}

/// `items` cut into `parts` contiguous pieces whose lengths differ by at most one (the first
/// `len % parts` pieces are the longer ones).
fn cut_even<T>(items: &[T], parts: usize) -> Vec<&[T]> {
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut rest = items;
    (0..parts)
        .map(|i| {
            let (piece, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            piece
        })
        .collect()
}

fn dirichlet(labels: &[u32], classes: usize, clients: usize, alpha: f64, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let gamma = Gamma::new(alpha, 1.0).expect("alpha was checked positive and finite");
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); clients];
    for class in 0..classes {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == class).collect();
        if rows.is_empty() {
            continue;
        }
        rows.shuffle(rng);
        let mut weights: Vec<f64> = (0..clients).map(|_| gamma.sample(rng)).collect();
        let total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            // Every Gamma draw underflowed (tiny alpha): the limit is "one client takes all".
            weights.iter_mut().for_each(|w| *w = 0.0);
            weights[rng.random_range(0..clients)] = 1.0;
        }
        let total: f64 = weights.iter().sum();
        // Cut points at the rounded cumulative proportions; the last is exactly rows.len().
        let mut start = 0;
        let mut acc = 0.0;
        for (client, w) in weights.iter().enumerate() {
            acc += w / total;
            let end = if client + 1 == clients {
                rows.len()
            } else {
                ((acc * rows.len() as f64).round() as usize).min(rows.len())
            };
            let end = end.max(start);
            parts[client].extend_from_slice(&rows[start..end]);
            start = end;
        }
    }
    // Repair: a client the draw left empty takes one sample from the largest part (ties go to
    // the lowest index). Enough samples exist because the caller checked n >= clients.
    for empty in 0..clients {
        if parts[empty].is_empty() {
            let donor = (0..clients).max_by_key(|&c| (parts[c].len(), std::cmp::Reverse(c))).expect("clients > 0");
            let row = parts[donor].pop().expect("the largest part has more than one sample");
            parts[empty].push(row);
        }
    }
    parts
}

fn shards_split(
    labels: &[u32],
    clients: usize,
    per_client: usize,
    shards: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    // Random order within a label, then a stable sort by label.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(rng);
    order.sort_by_key(|&i| labels[i]);
    let pieces = cut_even(&order, shards);
    let mut deal: Vec<usize> = (0..shards).collect();
    deal.shuffle(rng);
    deal.chunks(per_client)
        .take(clients)
        .map(|ids| ids.iter().flat_map(|&s| pieces[s].iter().copied()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{BlobSpec, gaussian_blobs};

    /// 1000 samples, 10 balanced-ish classes; feature 0 is the row number so rows can be traced.
    fn numbered() -> Dataset {
        let mut d = gaussian_blobs("d", &BlobSpec::new(2, 10, 1000, 3));
        for i in 0..d.len() {
            d.features[i * d.dim] = i as f32;
        }
        d
    }

    fn ids(d: &Dataset) -> Vec<usize> {
        (0..d.len()).map(|i| d.row(i)[0] as usize).collect()
    }

    fn histogram(d: &Dataset) -> Vec<usize> {
        let mut h = vec![0; d.classes];
        d.labels.iter().for_each(|&l| h[l as usize] += 1);
        h
    }

    fn assert_exact_cover(full: &Dataset, parts: &[Dataset], clients: usize) {
        assert_eq!(parts.len(), clients);
        assert!(parts.iter().all(|p| !p.is_empty()));
        let mut all: Vec<usize> = parts.iter().flat_map(ids).collect();
        all.sort_unstable();
        assert_eq!(all, (0..full.len()).collect::<Vec<_>>(), "every sample in exactly one part");
        for p in parts {
            for i in 0..p.len() {
                assert_eq!(p.labels[i], full.labels[ids(p)[i]], "labels travel with their rows");
            }
        }
    }

    const SCHEMES: [Partition; 4] = [
        Partition::Iid,
        Partition::Dirichlet { alpha: 0.1 },
        Partition::Dirichlet { alpha: 10.0 },
        Partition::Shards { per_client: 2 },
    ];

    #[test]
    fn every_scheme_covers_exactly_once_and_is_deterministic() {
        let d = numbered();
        for scheme in SCHEMES {
            for clients in [1, 7, 10] {
                let parts = partition(&d, clients, scheme, 5).unwrap();
                assert_exact_cover(&d, &parts, clients);
                let again = partition(&d, clients, scheme, 5).unwrap();
                assert!(parts.iter().zip(&again).all(|(a, b)| ids(a) == ids(b)), "{scheme:?}");
                assert_eq!(parts[0].name, "d.part0");
            }
            let other = partition(&d, 10, scheme, 6).unwrap();
            let base = partition(&d, 10, scheme, 5).unwrap();
            assert!(other.iter().zip(&base).any(|(a, b)| ids(a) != ids(b)), "{scheme:?}: seed matters");
        }
    }

    #[test]
    fn iid_sizes_are_even() {
        let parts = partition(&numbered(), 7, Partition::Iid, 1).unwrap();
        let sizes: Vec<usize> = parts.iter().map(Dataset::len).collect();
        assert_eq!(sizes, [143, 143, 143, 143, 143, 143, 142]);
    }

    /// Mean over clients of the share of a client's samples in its most common class.
    fn mean_top_share(parts: &[Dataset]) -> f64 {
        parts.iter().map(|p| *histogram(p).iter().max().unwrap() as f64 / p.len() as f64).sum::<f64>()
            / parts.len() as f64
    }

    #[test]
    fn small_alpha_skews_labels_and_iid_does_not() {
        let d = numbered();
        let iid = mean_top_share(&partition(&d, 10, Partition::Iid, 2).unwrap());
        let skewed = mean_top_share(&partition(&d, 10, Partition::Dirichlet { alpha: 0.1 }, 2).unwrap());
        let mild = mean_top_share(&partition(&d, 10, Partition::Dirichlet { alpha: 1000.0 }, 2).unwrap());
        assert!(iid < 0.25, "iid clients see all classes: {iid}");
        assert!(skewed > 0.5, "alpha 0.1 concentrates clients on few classes: {skewed}");
        assert!(mild < 0.25, "a large alpha approaches iid: {mild}");
    }

    #[test]
    fn tiny_alpha_still_gives_every_client_a_sample() {
        let d = numbered();
        let parts = partition(&d, 50, Partition::Dirichlet { alpha: 1e-6 }, 9).unwrap();
        assert_exact_cover(&d, &parts, 50);
    }

    #[test]
    fn shards_limit_the_classes_per_client() {
        let d = numbered();
        let smallest_class = *histogram(&d).iter().min().unwrap();
        for per_client in [2, 3, 5] {
            // A shard no bigger than the smallest class spans at most two labels.
            assert!(d.len().div_ceil(10 * per_client) <= smallest_class);
            let parts = partition(&d, 10, Partition::Shards { per_client }, 4).unwrap();
            assert_exact_cover(&d, &parts, 10);
            for p in &parts {
                let seen = histogram(p).iter().filter(|&&c| c > 0).count();
                assert!(seen <= 2 * per_client, "per_client {per_client}: {:?}", histogram(p));
            }
        }
        // IID clients of the same size see every class.
        let iid = partition(&d, 10, Partition::Iid, 4).unwrap();
        assert!(iid.iter().all(|p| histogram(p).iter().all(|&c| c > 0)));
    }

    #[test]
    fn impossible_partitions_are_errors() {
        let d = gaussian_blobs("small", &BlobSpec::new(2, 3, 5, 1));
        let err = |clients, scheme| partition(&d, clients, scheme, 0).unwrap_err().to_string();
        assert!(err(0, Partition::Iid).contains("at least one client"));
        assert!(
            err(6, Partition::Iid).contains("5 samples cannot give each of 6 clients"),
            "{}",
            err(6, Partition::Iid)
        );
        assert!(err(2, Partition::Dirichlet { alpha: 0.0 }).contains("alpha 0"));
        assert!(err(2, Partition::Dirichlet { alpha: f64::NAN }).contains("alpha NaN"));
        assert!(err(2, Partition::Shards { per_client: 3 }).contains("2 clients x 3 non-empty shards"));
        assert!(err(2, Partition::Shards { per_client: 0 }).contains("x 0"));
        assert!(err(2, Partition::Shards { per_client: usize::MAX }).starts_with("dataset small: cannot partition"));
        assert_eq!(partition(&d, 5, Partition::Shards { per_client: 1 }, 0).unwrap().len(), 5);
    }
}
