//! Selecting: the run posts a demand for clients and waits for the scheduler's offer. On
//! an offer it picks its cohort (Poisson sampling, or a seeded shuffle cut to the selection
//! size), hands the rest back, reserves a private round's cost, records the round and
//! dispatches the tasks: → Training. The scheduler gives up for it when too few eligible
//! clients are online by the deadline: → Failed.

use super::super::RunEventKind;
use super::super::fleet::{Eligibility, Lease};
use super::super::run::{DemandSpec, RunCore};
use super::super::task::{PrivacyTask, TaskAssignment, TaskKind};
use super::training::Training;
use super::{Assignment, AssignmentState, Assignments, Phase, Transition};
use crate::aggregation::RoundSum;
use crate::ids::RegionId;
use crate::plan::{DpMechanism, Sampling};
use crate::privacy::admission::AttemptRef;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use tokio::time::Instant;
use tracing::{info, warn};

/// Waiting for clients.
#[derive(Debug)]
pub(in crate::round) struct Selecting;

/// Waiting for the cleaner window a carbon-aware plan asked for.
#[derive(Debug)]
pub(in crate::round) struct Deferred {
    until: Instant,
}

/// Starts a round: at once, or, for a plan with `[schedule] prefer_low_carbon` whose
/// regions have a cleaner window ahead within `max_delay` (per the carbon feed), deferred
/// to it, with an audit entry saying when and why.
pub(in crate::round) fn begin(core: &mut RunCore) -> Phase {
    core.compute.clear();
    core.cost.reset();
    let schedule = core.plan.schedule;
    let Some(signal) = core.env.settings.carbon.as_ref().filter(|_| schedule.prefer_low_carbon) else {
        return enter(core);
    };
    let feed = signal.feed();
    let regions: Vec<RegionId> = if core.plan.regions.is_all() {
        feed.regions().cloned().collect()
    } else {
        core.plan.regions.iter().cloned().collect()
    };
    let now = chrono::Utc::now();
    let max_delay = chrono::Duration::milliseconds((schedule.max_delay_seconds * 1000.0) as i64);
    let Some(d) = feed.defer(&regions, now, max_delay) else { return enter(core) };
    let wait = (d.until - now).to_std().unwrap_or_default();
    let key = &core.key;
    info!(run = %key.run, round = key.round, until = %d.until, now_g = d.now_g_per_kwh, then_g = d.then_g_per_kwh, "round deferred to a lower-carbon window");
    let detail = format!(
        "round {} deferred {:.0} s to {} for lower carbon: {:.1} → {:.1} g CO2e/kWh over {}",
        key.round,
        wait.as_secs_f64(),
        d.until.to_rfc3339(),
        d.now_g_per_kwh,
        d.then_g_per_kwh,
        regions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    let draft = crate::audit::draft(crate::audit::COORDINATOR, fedra_types::audit::AuditAction::RoundDeferred, detail)
        .run(&key.run);
    let store = std::sync::Arc::clone(&core.env.store);
    tokio::spawn(async move {
        if let Err(e) = crate::audit::record(store.as_ref(), draft).await {
            warn!(error = %e, "cannot audit a round deferral");
        }
    });
    Phase::Deferred(Deferred { until: Instant::now() + wait })
}

/// A carbon-aware plan's cohort: clients in regions with lower intensity now come first (a
/// stable sort of the seeded shuffle, so ties keep their random order); regions the feed
/// does not know come last.
fn prefer_clean_regions(core: &RunCore, chosen: &mut [Lease]) {
    let Some(signal) = core.env.settings.carbon.as_ref().filter(|_| core.plan.schedule.prefer_low_carbon) else {
        return;
    };
    let feed = signal.feed();
    let now = chrono::Utc::now();
    chosen.sort_by(|a, b| {
        let g = |l: &Lease| feed.intensity(&l.region, now).unwrap_or(f64::INFINITY);
        g(a).total_cmp(&g(b))
    });
}

/// A deferred round whose window has come starts selecting, with a fresh deadline.
pub(in crate::round) fn on_tick_deferred(d: &Deferred, core: &mut RunCore) -> Transition {
    let now = Instant::now();
    if now < d.until {
        return Transition::Stay;
    }
    core.started = now;
    core.deadline = now + core.plan.round_deadline;
    Transition::to(enter(core))
}

/// Posts the run's demand: the target count at once, the quorum after a grace period (a
/// fifth of the deadline), every free eligible client as candidates.
///
/// At the global tier participants are regional aggregators: the run waits for one per
/// region its plan names (any one when it names none), and for any one after the grace.
pub(in crate::round) fn enter(core: &RunCore) -> Phase {
    let plan = &core.plan;
    let (need, relaxed) = if core.env.settings.tier.is_global() {
        (plan.regions.iter().count().max(1), 1)
    } else {
        (plan.clients_per_round as usize, plan.min_clients as usize)
    };
    core.demand(Some(DemandSpec {
        round: core.key.round,
        eligibility: Eligibility::for_plan(plan, core.env.settings.governance.snapshot()),
        need,
        relaxed: Some((core.started + plan.round_deadline / 5, relaxed)),
        max: usize::MAX,
        deadline: core.deadline,
        patient: true,
    }));
    Phase::Selecting(Selecting)
}

/// The scheduler found too few eligible clients online by the deadline.
pub(in crate::round) fn on_give_up(core: &RunCore, online: usize) -> Transition {
    Transition::fail(format!(
        "only {online} eligible clients online by the deadline, quorum is {}",
        core.plan.min_clients
    ))
}

/// Picks the cohort from the offered clients and starts training.
pub(in crate::round) async fn on_offer(_: &mut Selecting, core: &mut RunCore, mut offered: Vec<Lease>) -> Transition {
    let plan = &core.plan;
    let key = core.key.clone();
    // Deterministic given the seed and the set of offered clients.
    offered.sort_by(|a, b| a.client.cmp(&b.client));
    let population: Vec<RegionId> = offered.iter().map(|l| l.region.clone()).collect();
    let mut chosen = offered;
    let global_tier = core.env.settings.tier.is_global();
    // Global tier: every offered region takes part, with a cohort by its client count.
    let mut cohorts = HashMap::new();
    if global_tier {
        let members: Vec<u32> = chosen.iter().map(|l| l.members).collect();
        let split =
            crate::hierarchy::split_cohorts(plan.clients_per_round, plan.min_clients, plan.over_selection, &members);
        let (asked, idle): (Vec<_>, Vec<_>) = chosen.into_iter().zip(split).partition(|(_, c)| c.target > 0);
        core.release(idle.into_iter().map(|(l, _)| l.task).collect(), false);
        let (leases, mut asked): (Vec<Lease>, Vec<_>) = asked.into_iter().unzip();
        if let Some(p) = &plan.privacy {
            let members: Vec<u32> = leases.iter().map(|l| l.members).collect();
            crate::hierarchy::private_cohorts(p, &mut asked, &members);
        }
        cohorts = leases.iter().map(|l| l.task.clone()).zip(asked).collect();
        chosen = leases;
    }
    match plan.privacy.as_ref().map(|p| p.sampling) {
        _ if global_tier => {}
        Some(Sampling::Poisson { rate }) => {
            // What the Rényi accountant assumes: each client independently with
            // probability q, from an unpredictable source (not the plan's seed).
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let (keep, rest): (Vec<Lease>, Vec<Lease>) = chosen.into_iter().partition(|_| rng.random_bool(rate));
            core.release(rest.into_iter().map(|l| l.task).collect(), false);
            chosen = keep;
        }
        _ => {
            let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ (u64::from(key.round) << 32) ^ u64::from(key.attempt));
            chosen.shuffle(&mut rng);
            prefer_clean_regions(core, &mut chosen);
            let rest = chosen.split_off(plan.selection_size().min(chosen.len()));
            core.release(rest.into_iter().map(|l| l.task).collect(), false);
        }
    }
    let selected: Vec<_> = chosen.iter().map(|l| (l.client.clone(), l.region.clone())).collect();
    let selected_regions: Vec<RegionId> = selected.iter().map(|(_, r)| r.clone()).collect();
    let global = match core.global() {
        Ok(g) => g.clone(),
        Err(e) => return Transition::fail(e.to_string()),
    };
    // A robust rule's scratch file exists before anyone is asked to train.
    let private = core.privacy_here().is_some();
    // No update may claim more samples than its client registered: the cohort's bound.
    let max_weight: f64 = chosen.iter().map(|l| l.registered_samples as f64).sum();
    let sum = match RoundSum::for_rule(
        &plan.aggregator,
        private,
        global.params.as_slice(),
        max_weight,
        &core.env.settings.scratch_dir,
    ) {
        Ok(sum) => sum,
        Err(e) => {
            core.release(chosen.into_iter().map(|l| l.task).collect(), false);
            return Transition::fail(format!("aggregation: {e}"));
        }
    };
    // A private round reserves its cost before any client is asked to train.
    let clip_norm = core.clip_norm.unwrap_or_else(|| plan.privacy.as_ref().map_or(0.0, |p| p.clipping.initial_norm()));
    let attempt = AttemptRef { run: &key.run, round: key.round, attempt: key.attempt };
    // At the global tier the regions reserve and charge their own scopes.
    let reserved = if global_tier {
        Ok(None)
    } else {
        core.env
            .reservations
            .reserve_round(
                core.env.store.as_ref(),
                plan,
                attempt,
                global.params.len(),
                clip_norm,
                &selected_regions,
                &population,
            )
            .await
    };
    let dp = match reserved {
        Ok(Some(dp)) => {
            crate::crash::point("privacy_reserved");
            let scopes = dp.scopes.iter().map(|s| format!("{} ε {:.4}", s.scope, s.epsilon)).collect::<Vec<_>>();
            let draft = crate::audit::draft(
                crate::audit::COORDINATOR,
                fedra_types::audit::AuditAction::PrivacyReserved,
                format!("round {} attempt {} reserved; ε after it: {}", key.round, key.attempt, scopes.join(", ")),
            )
            .run(&key.run);
            // The reservation is in the ledger already; a private round never starts unaudited.
            if let Err(e) = crate::audit::record(core.env.store.as_ref(), draft).await {
                core.release(chosen.into_iter().map(|l| l.task).collect(), false);
                return Transition::fail(format!("store failure: cannot audit the reservation: {e}"));
            }
            Some(dp)
        }
        Ok(None) => None,
        Err(e) => {
            warn!(run = %key.run, round = key.round, error = %e, "private round refused");
            core.release(chosen.into_iter().map(|l| l.task).collect(), false);
            return Transition::fail(e.to_string());
        }
    };
    if let Err(e) = core.env.store.begin_round(&key.run, key.round, key.attempt, &selected).await {
        core.release(chosen.into_iter().map(|l| l.task).collect(), false);
        return Transition::fail(format!("store failure: {e}"));
    }
    core.recorded = true;
    crate::crash::point("selected");
    // Training's deadline counts from dispatch: time spent waiting for busy clients is not
    // taken from the clients' training time.
    let now = Instant::now();
    core.deadline = now + plan.round_deadline;
    let template = TaskAssignment {
        task: crate::ids::TaskId::generate(),
        run: key.run.clone(),
        round: key.round,
        model: plan.model.clone(),
        layout: global.layout.clone(),
        local: plan.local.clone(),
        deadline: plan.round_deadline,
        chunk_bytes: core.env.settings.chunk_bytes,
        seed: plan.seed ^ u64::from(key.round).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        kind: TaskKind::Train,
        privacy: dp.as_ref().map(|d| PrivacyTask {
            clip_norm: d.mechanism.clip_norm,
            local_noise_std: if d.mechanism.mechanism == DpMechanism::Local {
                d.mechanism.update_noise_target_std
            } else {
                0.0
            },
            lattice_slack: d.mechanism.lattice_slack,
        }),
        cohort: None,
        compression: plan.compression,
    };
    let (assignments, undelivered) = dispatch(chosen, &template, &cohorts);
    core.release(undelivered, false);
    info!(run = %key.run, round = key.round, selected = selected.len(), target = plan.clients_per_round, "round training");
    let target = plan.clients_per_round;
    metrics::counter!("fedra_clients_selected_total").increment(assignments.0.len() as u64);
    core.emit(RunEventKind::Selected { clients: selected.into_iter().map(|(c, _)| c).collect(), target });
    core.references.clear();
    Transition::to(Phase::Training(Training::new(assignments, sum, dp, population)))
}

/// Sends each leased client its copy of `template` under the lease's task id. A client
/// whose stream is gone or full is recorded as dropped straight away (and its lease ends).
/// A regional aggregator's lease gets its region's cohort from `cohorts`.
pub(in crate::round) fn dispatch(
    leases: Vec<Lease>,
    template: &TaskAssignment,
    cohorts: &HashMap<crate::ids::TaskId, crate::hierarchy::Cohort>,
) -> (Assignments, Vec<crate::ids::TaskId>) {
    let mut tasks = HashMap::with_capacity(leases.len());
    let mut undelivered = Vec::new();
    for lease in leases {
        let cohort = cohorts.get(&lease.task).cloned();
        let members = cohort.as_ref().map_or(lease.members, |c| c.target);
        let delivered = lease.deliver(TaskAssignment { task: lease.task.clone(), cohort, ..template.clone() });
        let state = if delivered { AssignmentState::Assigned } else { AssignmentState::Dropped };
        if !delivered {
            undelivered.push(lease.task.clone());
        }
        tasks.insert(
            lease.task,
            Assignment {
                client: lease.client,
                region: lease.region,
                state,
                registered_samples: lease.registered_samples,
                // A region may claim at most the cohort it was asked for.
                members,
            },
        );
    }
    (Assignments(tasks), undelivered)
}
