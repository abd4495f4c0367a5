//! One reading of a run's rounds for every harness (gRPC, in process, in tiers): round 1
//! apart (it pays for the first broadcast and warm-up), the later rounds as the steady
//! state. Only rounds that were published count.
//!
//! The run's last round is left out of the steady state when others remain: a round is
//! timed from the previous round's `Published`, which comes late by the time its checkpoint
//! was written while the next round ran (see the coordinator's `phases::publishing`), and
//! the last round has no next round to hide its own write in. It would look shorter than a
//! steady round by that overlap.

use super::RoundObservation;
use serde::Serialize;

/// Round 1's and the steady rounds' times, as every case report carries them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundTimes {
    pub first_round_s: Option<f64>,
    pub steady_round_s_median: Option<f64>,
    pub steady_round_s_min: Option<f64>,
    pub steady_round_s_max: Option<f64>,
    pub steady_train_phase_s_median: Option<f64>,
    pub first_round_coordinator_cpu_s: Option<f64>,
}

/// The published rounds of one run, split into round 1 and the steady rounds after it.
pub struct Rounds<'a> {
    pub first: Option<&'a RoundObservation>,
    steady: Vec<&'a RoundObservation>,
}

impl<'a> Rounds<'a> {
    pub fn of(rounds: &'a [RoundObservation]) -> Self {
        let done = rounds.iter().filter(|r| r.published_at > 0.0);
        let mut steady: Vec<_> = done.clone().filter(|r| r.round > 1).collect();
        let last = rounds.iter().map(|r| r.round).max();
        if steady.len() > 1 && steady.last().map(|r| r.round) == last {
            steady.pop();
        }
        Self { first: done.clone().find(|r| r.round == 1), steady }
    }

    fn steady(&self, f: impl Fn(&RoundObservation) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = self.steady.iter().map(|r| f(r)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Median over the steady rounds (mean of the middle two for an even count).
    pub fn median(&self, f: impl Fn(&RoundObservation) -> f64) -> Option<f64> {
        median_sorted(&self.steady(f))
    }

    /// The steady median, or round 1's value when the run had no steady round.
    pub fn median_or_first(&self, f: impl Fn(&RoundObservation) -> f64) -> Option<f64> {
        self.median(&f).or(self.first.map(f))
    }

    pub fn min(&self, f: impl Fn(&RoundObservation) -> f64) -> Option<f64> {
        self.steady(f).first().copied()
    }

    pub fn max(&self, f: impl Fn(&RoundObservation) -> f64) -> Option<f64> {
        self.steady(f).last().copied()
    }

    /// The round times of a case report.
    pub fn times(&self) -> RoundTimes {
        RoundTimes {
            first_round_s: self.first.map(|r| r.wall_s),
            steady_round_s_median: self.median(|r| r.wall_s),
            steady_round_s_min: self.min(|r| r.wall_s),
            steady_round_s_max: self.max(|r| r.wall_s),
            steady_train_phase_s_median: self.median(|r| r.train_phase_s),
            first_round_coordinator_cpu_s: self.first.map(|r| r.coordinator_cpu_s),
        }
    }
}

/// The median of values already sorted ascending.
fn median_sorted(v: &[f64]) -> Option<f64> {
    let m = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[m]),
        _ => Some((v[m - 1] + v[m]) / 2.0),
    }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    median_sorted(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(round: u32, wall_s: f64, published: bool) -> RoundObservation {
        RoundObservation {
            round,
            selected_at: 0.0,
            published_at: if published { 1.0 } else { 0.0 },
            wall_s,
            train_phase_s: 0.0,
            coordinator_cpu_s: 0.0,
            bench_cpu_s: 0.0,
            wire_up: 0,
            wire_down: 0,
            loopback: 0,
            fold_s: 0.0,
            publish_s: 0.0,
            aggregated_at: 0.0,
        }
    }

    #[test]
    fn the_last_round_stays_out_of_the_steady_state_while_others_remain() {
        let rounds = [round(1, 9.0, true), round(2, 3.0, true), round(3, 4.0, true), round(4, 1.0, true)];
        assert_eq!(Rounds::of(&rounds).median(|r| r.wall_s), Some(3.5));
        let two = [round(1, 9.0, true), round(2, 3.0, true)];
        assert_eq!(Rounds::of(&two).median(|r| r.wall_s), Some(3.0), "the only later round counts");
    }

    #[test]
    fn round_one_and_unpublished_rounds_stay_out_of_the_steady_state() {
        let rounds =
            [round(1, 9.0, true), round(2, 3.0, true), round(3, 1.0, true), round(4, 2.0, true), round(5, 50.0, false)];
        let r = Rounds::of(&rounds);
        assert_eq!(r.first.map(|f| f.wall_s), Some(9.0));
        assert_eq!(r.median(|r| r.wall_s), Some(2.0));
        assert_eq!((r.min(|r| r.wall_s), r.max(|r| r.wall_s)), (Some(1.0), Some(3.0)));
        let only_first = [round(1, 9.0, true)];
        let r = Rounds::of(&only_first);
        assert_eq!(r.median(|r| r.wall_s), None);
        assert_eq!(r.median_or_first(|r| r.wall_s), Some(9.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
