//! Regional aggregators: residency by architecture. In a multi-region deployment every
//! region runs a coordinator in the **regional** tier next to its clients, and one
//! coordinator runs in the **global** tier. Raw client updates never leave their region:
//!
//! ```text
//!   global coordinator   ◀── one aggregate per region and round (R·P·4 bytes, not N·P·4)
//!      │ Task{cohort: target, min}          ▲ PushUpdate: Σ nᵢ·xᵢ / Σ nᵢ, weight Σ nᵢ,
//!      ▼                                    │            contributors = count
//!   regional aggregator (eu-west)  — a one-round local run per global round: selects its
//!      │ Task (as today)            ▲        own clients, broadcasts the global model from
//!      ▼                            │        one buffer, folds their verified updates
//!   client sidecars of eu-west ─────┘
//! ```
//!
//! The global coordinator registers each regional aggregator as one participant whose
//! `members` is its region's client count (never which clients), splits a round's
//! `clients_per_round` over the regions by those counts ([`split_cohorts`]) and folds each
//! region's weighted mean with weight Σ nᵢ. Since Σ_r (Σ_{i∈r} nᵢ)·(Σ_{i∈r} nᵢxᵢ / Σ_{i∈r} nᵢ)
//! = Σᵢ nᵢxᵢ, the global model is flat FedAvg of the same clients, up to the `f32` rounding
//! of each regional mean on the wire (≤ 2⁻²⁴ relative per value).
//!
//! A regional aggregator serves each cohort task with a local one-round run (see
//! [`cohort_plan`]) whose initial checkpoint is the global model it was sent; the task, its
//! run and whether the aggregate was accepted are in the regional store
//! ([`crate::store::UpstreamTask`]), so a restarted aggregator finishes and resends what it
//! owes, and the global coordinator counts a task once (a resend is `already reported`).

use crate::ids::{RegionId, RunId, TaskId};
use crate::model::ModelSpec;
use crate::plan::{EvaluationPlan, LocalTraining, PlanError, PrivacyPlan, RawPlan, RegionSet, RunPlan, Strategy};
use std::time::Duration;

/// Which tier this coordinator serves in a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tier {
    /// One coordinator that aggregates its clients' raw updates itself (the default).
    #[default]
    Standalone,
    /// Sees only regional aggregates: its participants are regional aggregators.
    Global,
    /// Next to the clients of `location`; takes cohort tasks from a global coordinator.
    Regional { location: RegionId },
}

impl Tier {
    pub fn is_global(&self) -> bool {
        matches!(self, Tier::Global)
    }

    /// The config's `role` for this tier.
    pub fn name(&self) -> &'static str {
        match self {
            Tier::Standalone => "standalone",
            Tier::Global => "global",
            Tier::Regional { .. } => "regional",
        }
    }
}

/// What a global coordinator asks of one region in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    /// Clients whose updates the region aggregates.
    pub target: u32,
    /// The fewest it may aggregate (its quorum).
    pub min: u32,
    /// Over-selection the region applies on top of `target`.
    pub over_selection: f64,
    /// A private run's mechanism as the region applies it (see [`private_cohorts`]).
    pub privacy: Option<PrivacyPlan>,
}

/// What selection mixes into round 1's task seed (`seed ^ round · φ·2⁶⁴`).
const ROUND_ONE_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// A regional deadline falls before the global one: the region closes its round with this
/// share of the task's deadline and keeps the rest for its aggregate's upload.
pub const REGIONAL_DEADLINE_SHARE: f64 = 0.8;

/// Splits a round's `target` clients (quorum `min`) over regions holding `members` clients
/// each, proportionally by largest remainder: the targets sum to `min(target, Σ members)`,
/// no region is asked for more than it has, and each region's quorum is its share of `min`
/// (at least 1, at most its target). A region with a zero target is not asked.
pub fn split_cohorts(target: u32, min: u32, over_selection: f64, members: &[u32]) -> Vec<Cohort> {
    let total: u64 = members.iter().map(|&m| u64::from(m)).sum();
    let want = u64::from(target).min(total);
    if total == 0 {
        return members.iter().map(|_| Cohort { target: 0, min: 0, over_selection, privacy: None }).collect();
    }
    // Floor shares first, then the remaining seats to the largest remainders (ties: lower index).
    let mut targets: Vec<u64> = members.iter().map(|&m| want * u64::from(m) / total).collect();
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse((want * u64::from(members[i])) % total), i));
    let mut left = want - targets.iter().sum::<u64>();
    // Seats beyond a region's members go to the next ones (only reachable by capping).
    while left > 0 {
        let mut placed = false;
        for &i in &order {
            if left > 0 && targets[i] < u64::from(members[i]) {
                targets[i] += 1;
                left -= 1;
                placed = true;
            }
        }
        if !placed {
            break;
        }
    }
    targets
        .into_iter()
        .map(|t| {
            let t = t as u32;
            let share = if want == 0 { 0.0 } else { f64::from(t) / want as f64 };
            let min_r = ((f64::from(min) * share).ceil() as u32).clamp(t.min(1), t);
            Cohort { target: t, min: min_r, over_selection, privacy: None }
        })
        .collect()
}

/// DP at the tier that sees raw updates: each asked region clips, noises and accounts its
/// own sum with the run's mechanism, over its share `m_r` of the run's denominator `m`
/// (`expected_clients`, split like the cohorts by client count, each at least 1). A region
/// releases `g + (S_r + N_r)/m_r` and the global tier folds those with weight `m_r`:
///
/// ```text
///   Σ_r m_r·(g + (S_r + N_r)/m_r) / Σ_r m_r  =  g + (Σᵢ Δᵢ + Σ_r N_r) / m
/// ```
///
/// which is flat DP-FedAvg's release with R independent noise draws of std z·C instead of
/// one. Each region's draw alone protects each of its clients as the flat draw would, so
/// every scope `<model>@<region>` is charged what the flat run charges it, in that region's
/// ledger; the global coordinator draws and charges nothing. Adaptive clipping is refused
/// for such runs (its count query would have to cross tiers).
pub fn private_cohorts(plan: &PrivacyPlan, cohorts: &mut [Cohort], members: &[u32]) {
    let asked: Vec<u32> = cohorts.iter().zip(members).map(|(c, &m)| if c.target > 0 { m } else { 0 }).collect();
    let shares = split_cohorts(plan.expected_clients, 1, 0.0, &asked);
    for (c, share) in cohorts.iter_mut().zip(shares) {
        if c.target > 0 {
            c.privacy = Some(PrivacyPlan { expected_clients: share.target.max(1), ..plan.clone() });
        }
    }
}

/// What a cohort task asks of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    /// Train the cohort on the global model and push one aggregate.
    Train,
    /// Evaluate the global coordinator's checkpoint on up to `target` of the region's
    /// clients' held-out splits and report their sample-weighted means.
    Evaluate,
}

impl CohortKind {
    /// The kind of the local run `plan` serves ([`cohort_plan`] gives only evaluation runs
    /// an evaluation plan).
    pub fn of(plan: &RunPlan) -> Self {
        if plan.evaluation.every_rounds > 0 { Self::Evaluate } else { Self::Train }
    }
}

/// A cohort task as a regional aggregator received it from its global coordinator.
#[derive(Debug, Clone)]
pub struct CohortTask {
    pub kind: CohortKind,
    pub task: TaskId,
    pub upstream_run: RunId,
    pub upstream_round: u32,
    pub model: ModelSpec,
    pub local: LocalTraining,
    /// Time left until the global round's deadline when the task was sent.
    pub deadline: Duration,
    pub seed: u64,
    /// The global run's update compression, which the region's clients apply (the
    /// region's own aggregate goes upstream uncompressed).
    pub compression: fedra_types::plan::Compression,
    pub cohort: Cohort,
    pub chunk_bytes: usize,
}

/// The local one-round run that serves `task` in `location`: the task's model and local
/// training, the cohort's target, quorum and over-selection, the region's clients only,
/// and [`REGIONAL_DEADLINE_SHARE`] of the task's deadline. A training run starts from
/// `initial` (the global model the task was sent with, stored as the run's round-0
/// checkpoint). An evaluation run has its one round done already (`initial` is then the
/// round-1 checkpoint, the model to evaluate) and only evaluates it, on up to the
/// cohort's target of clients.
///
/// # Errors
/// A task whose numbers make no valid plan (a zero target, a deadline under 0.1 s…).
pub fn cohort_plan(
    task: &CohortTask,
    location: &RegionId,
    initial: crate::ids::CheckpointId,
) -> Result<RunPlan, PlanError> {
    RunPlan::new(RawPlan {
        model: task.model.clone(),
        initial_checkpoint: Some(initial),
        strategy: Some(Strategy::FedAvg),
        aggregator: Default::default(),
        rounds: 1,
        clients_per_round: task.cohort.target,
        min_clients: task.cohort.min,
        over_selection: task.cohort.over_selection,
        round_deadline: task.deadline.as_secs_f64() * REGIONAL_DEADLINE_SHARE,
        local: task.local.clone(),
        regions: RegionSet::new([location.clone()]),
        // The local round's task seed (seed ^ the round-1 mix, as selection derives it) is
        // then the global task's: a region's clients train with the seeds a flat run would
        // give them. Never 0, which would draw a fresh seed.
        seed: (task.seed ^ ROUND_ONE_SEED_MIX).max(1),
        evaluation: match task.kind {
            CohortKind::Train => EvaluationPlan::default(),
            CohortKind::Evaluate => EvaluationPlan { every_rounds: 1, clients: task.cohort.target },
        },
        privacy: task.cohort.privacy.clone(),
        priority: 0,
        promotion: Default::default(),
        // The global run's schedule already decided when this round runs.
        schedule: Default::default(),
        compression: task.compression,
    })
}

/// A regional aggregator's inventory, as it registers upstream: clients online and their
/// samples (the most its aggregate may claim as a weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inventory {
    pub clients: u32,
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cohorts_cover_the_target_within_each_region(
            target in 1u32..500, min_frac in 0.0f64..=1.0, members in proptest::collection::vec(0u32..200, 1..8)
        ) {
            let min = ((f64::from(target) * min_frac) as u32).clamp(1, target);
            let cohorts = split_cohorts(target, min, 0.25, &members);
            prop_assert_eq!(cohorts.len(), members.len());
            let total: u64 = members.iter().map(|&m| u64::from(m)).sum();
            let sum: u64 = cohorts.iter().map(|c| u64::from(c.target)).sum();
            prop_assert_eq!(sum, u64::from(target).min(total));
            for (c, &m) in cohorts.iter().zip(&members) {
                prop_assert!(c.target <= m);
                prop_assert!(c.min <= c.target);
                prop_assert!(c.target == 0 || c.min >= 1);
            }
            // Quorums add up to at least the run's (each is its share, rounded up).
            if sum == u64::from(target) {
                prop_assert!(cohorts.iter().map(|c| c.min).sum::<u32>() >= min);
            }
        }
    }

    #[test]
    fn equal_regions_share_equally_and_remainders_go_first_come() {
        let c = split_cohorts(9, 6, 0.0, &[3, 3, 3]);
        assert_eq!(c.iter().map(|c| (c.target, c.min)).collect::<Vec<_>>(), [(3, 2), (3, 2), (3, 2)]);
        let c = split_cohorts(10, 10, 0.0, &[100, 100, 100]);
        assert_eq!(c.iter().map(|c| c.target).collect::<Vec<_>>(), [4, 3, 3]);
        // A small region is capped at what it has; the rest goes to the others.
        let c = split_cohorts(10, 5, 0.0, &[1, 100, 100]);
        assert_eq!(c.iter().map(|c| c.target).sum::<u32>(), 10);
        assert!(c[0].target <= 1, "{c:?}");
    }

    #[test]
    fn private_cohorts_split_the_denominator_over_the_asked_regions() {
        use crate::plan::{Clipping, DpMechanism, OverBound, Sampling};
        let plan = PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping: Clipping::Fixed { norm: 1.0 },
            over_bound: OverBound::Reject,
            sampling: Sampling::Fixed,
            expected_clients: 10,
        };
        let members = [100, 0, 50, 50];
        let mut cohorts = split_cohorts(10, 10, 0.0, &members);
        private_cohorts(&plan, &mut cohorts, &members);
        let m: Vec<Option<u32>> = cohorts.iter().map(|c| c.privacy.as_ref().map(|p| p.expected_clients)).collect();
        assert_eq!(m, [Some(5), None, Some(3), Some(2)]);
        // Everything but the denominator is the run's.
        let p = cohorts[0].privacy.as_ref().unwrap();
        assert_eq!(PrivacyPlan { expected_clients: 10, ..p.clone() }, plan);
    }
}
