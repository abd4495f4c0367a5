//! Cost attribution: what each round of a run cost, per region, persisted with the round.
//!
//! Three quantities are measured, never estimated:
//! - **bytes moved**: the encoded update bytes each counted upload carried, and the model
//!   bytes sent to each selected client (the broadcast);
//! - **coordinator CPU seconds**: thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of the work
//!   done for the round off the reactor: each update's fold (charged to its client's region)
//!   and the round's aggregation and publishing (shared among the regions in proportion to
//!   their counted updates). Protocol work (TLS, HTTP/2, decoding) is not attributed;
//! - **client training seconds**: what the contributing clients reported.
//!
//! With prices configured (`[cost]`), each region's share is priced at commit time, so that
//! a round's cost stays what it was when the prices change later. A run's cost is the sum of
//! its rounds'; a model's, the sum of its runs'.

use crate::ids::RegionId;
use std::collections::BTreeMap;

/// Prices of the measured quantities (`[cost]` in the coordinator config).
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// ISO 4217 code or any unit the operator bills in, e.g. "USD".
    pub currency: String,
    pub per_gib_moved: f64,
    pub per_coordinator_cpu_hour: f64,
    pub per_client_training_hour: f64,
}

impl Prices {
    /// The price of the given quantities.
    pub fn of(&self, bytes: u64, coordinator_cpu_seconds: f64, client_train_seconds: f64) -> f64 {
        bytes as f64 / GIB * self.per_gib_moved
            + coordinator_cpu_seconds / 3600.0 * self.per_coordinator_cpu_hour
            + client_train_seconds / 3600.0 * self.per_client_training_hour
    }
}

const GIB: f64 = (1u64 << 30) as f64;

pub use fedra_types::cost::RegionCost;

/// What one round attempt has cost so far; reset when the attempt starts.
#[derive(Debug, Default)]
pub struct RoundTally {
    regions: BTreeMap<RegionId, RegionCost>,
    /// Aggregation and publishing CPU, shared among the regions at [`Self::finish`].
    shared_cpu_seconds: f64,
}

impl RoundTally {
    fn region(&mut self, region: &RegionId) -> &mut RegionCost {
        self.regions.entry(region.clone()).or_insert_with(|| RegionCost {
            region: region.clone(),
            updates: 0,
            update_bytes: 0,
            broadcast_bytes: 0,
            coordinator_cpu_seconds: 0.0,
            client_train_seconds: 0.0,
            cost: None,
            currency: None,
        })
    }

    /// A counted update: its encoded bytes, the CPU its fold took, the training seconds its
    /// client reported.
    pub fn update(&mut self, region: &RegionId, bytes: u64, fold_cpu_seconds: f64, train_seconds: f64) {
        let r = self.region(region);
        r.updates += 1;
        r.update_bytes += bytes;
        r.coordinator_cpu_seconds += fold_cpu_seconds.max(0.0);
        r.client_train_seconds += train_seconds.max(0.0);
    }

    /// CPU of a refused update's fold: spent on the region, nothing counted.
    pub fn refused(&mut self, region: &RegionId, fold_cpu_seconds: f64) {
        self.region(region).coordinator_cpu_seconds += fold_cpu_seconds.max(0.0);
    }

    /// The global model sent to a client of `region`.
    pub fn broadcast(&mut self, region: &RegionId, bytes: u64) {
        self.region(region).broadcast_bytes += bytes;
    }

    /// Round-level CPU (aggregation, publishing).
    pub fn shared_cpu(&mut self, seconds: f64) {
        self.shared_cpu_seconds += seconds.max(0.0);
    }

    /// The per-region costs: the shared CPU split by counted updates (evenly when none
    /// counted), each region priced when `prices` are given. With `private`, the clients'
    /// training seconds are dropped before pricing (they follow the clients' data sizes, which
    /// a private run does not disclose), so the cost covers bytes and coordinator CPU only.
    /// Resets the tally.
    pub fn finish(&mut self, prices: Option<&Prices>, private: bool) -> Vec<RegionCost> {
        let mut regions: Vec<RegionCost> = std::mem::take(&mut self.regions).into_values().collect();
        let shared = std::mem::take(&mut self.shared_cpu_seconds);
        let updates: u32 = regions.iter().map(|r| r.updates).sum();
        let n = regions.len();
        for r in &mut regions {
            if private {
                r.client_train_seconds = 0.0;
            }
            let share = if updates > 0 { f64::from(r.updates) / f64::from(updates) } else { 1.0 / n as f64 };
            r.coordinator_cpu_seconds += shared * share;
            if let Some(p) = prices {
                r.cost =
                    Some(p.of(r.update_bytes + r.broadcast_bytes, r.coordinator_cpu_seconds, r.client_train_seconds));
                r.currency = Some(p.currency.clone());
            }
        }
        regions
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The CPU seconds `work` took on this thread, with its result (for blocking work).
pub fn cpu_timed<T>(work: impl FnOnce() -> T) -> (T, f64) {
    let before = fedra_telemetry::thread_cpu_seconds();
    let out = work();
    (out, (fedra_telemetry::thread_cpu_seconds() - before).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn shared_cpu_follows_counted_updates_and_prices_apply_per_region() {
        let mut t = RoundTally::default();
        t.broadcast(&region("eu"), 400);
        t.broadcast(&region("eu"), 400);
        t.broadcast(&region("us"), 400);
        t.update(&region("eu"), 100, 0.5, 10.0);
        t.update(&region("eu"), 100, 0.5, 10.0);
        t.update(&region("us"), 100, 1.0, 30.0);
        t.shared_cpu(3.0);
        let prices = Prices {
            currency: "USD".into(),
            per_gib_moved: GIB,
            per_coordinator_cpu_hour: 3600.0,
            per_client_training_hour: 0.0,
        };
        let costs = t.finish(Some(&prices), false);
        assert_eq!(costs.len(), 2);
        let eu = &costs[0];
        assert_eq!((eu.updates, eu.update_bytes, eu.broadcast_bytes), (2, 200, 800));
        // Two of three updates: two thirds of the shared 3 s on top of the folds' 1 s.
        assert!((eu.coordinator_cpu_seconds - 3.0).abs() < 1e-12, "{eu:?}");
        // One currency unit per byte and per CPU second.
        assert!((eu.cost.unwrap() - (1000.0 + 3.0)).abs() < 1e-9, "{eu:?}");
        let us = &costs[1];
        assert!((us.coordinator_cpu_seconds - 2.0).abs() < 1e-12);
        assert_eq!(us.client_train_seconds, 30.0);
        assert_eq!(us.currency.as_deref(), Some("USD"));
        // Finished: the next attempt starts from nothing.
        assert!(t.finish(None, false).is_empty());
    }

    #[test]
    fn without_prices_nothing_is_priced_and_without_updates_cpu_is_split_evenly() {
        let mut t = RoundTally::default();
        t.broadcast(&region("eu"), 1);
        t.broadcast(&region("us"), 1);
        t.shared_cpu(2.0);
        let costs = t.finish(None, false);
        assert!(costs.iter().all(|c| c.cost.is_none() && (c.coordinator_cpu_seconds - 1.0).abs() < 1e-12));
        // A private round keeps no training seconds, so its price has none in it either.
        t.update(&region("eu"), 10, 0.0, 100.0);
        let prices = Prices {
            currency: "EUR".into(),
            per_gib_moved: 0.0,
            per_coordinator_cpu_hour: 0.0,
            per_client_training_hour: 3600.0,
        };
        let private = t.finish(Some(&prices), true);
        assert_eq!((private[0].client_train_seconds, private[0].cost), (0.0, Some(0.0)));
    }

    #[test]
    fn cpu_timed_measures_this_threads_work() {
        let (sum, cpu) = cpu_timed(|| (0..5_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b)));
        std::hint::black_box(sum);
        assert!(cpu > 0.0);
    }
}
