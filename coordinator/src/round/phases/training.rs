//! Training: clients train and stream their updates; each verified update is folded into
//! the running sum. → Aggregating when the target has reported, when nobody is left to
//! report and the quorum is met, or at the deadline with the quorum; → Failed when the
//! quorum can no longer be met, or when a fold panics (that round fails, nothing else).

use super::super::run::RunCore;
use super::super::task::{UpdateValues, UploadTicket, VerifiedUpdate};
use super::super::{MetricsMean, RoundError, RunEventKind};
use super::aggregating;
use super::{AssignmentState, Assignments, Transition};
use crate::aggregation::RoundSum;
use crate::checkpoint::Contributor;
use crate::ids::{ClientId, RegionId, TaskId};
use crate::plan::{DpMechanism, OverBound, Sampling};
use crate::privacy::PrivacyError;
use crate::privacy::admission::PrivateRound;
use crate::store::{ParticipationRecord, ParticipationStatus};
use tokio::time::Instant;
use tracing::{error, info, warn};

mod streaming;
pub(in crate::round) use streaming::on_stream;

/// Who was asked, who answered, and the running sum.
#[derive(Debug)]
pub(in crate::round) struct Training {
    pub assignments: Assignments,
    /// Taken out only while a fold runs (the actor waits for it) and when training ends.
    acc: Option<RoundSum>,
    metrics: MetricsMean,
    contributors: Vec<Contributor>,
    dp: Option<PrivateRound>,
    /// Time spent in folds so far (reported with the Aggregated event).
    fold_seconds: f64,
    /// Encoded chunk bytes of the updates counted so far (reported with the Aggregated event).
    update_bytes: u64,
    /// Regions of every client offered to the round: a round whose plan allows every
    /// region and that got no update publishes to these.
    population: Vec<RegionId>,
    /// Streamed uploads in progress (see [`crate::round::stream`]).
    streams: std::collections::HashMap<TaskId, streaming::OpenStream>,
    /// Why the sum can no longer be trusted (a streamed upload could not be subtracted).
    /// A boxed `str` keeps the phase small (it moves at every transition).
    broken: Option<Box<str>>,
    /// The round has what it needs and closes once the chunks folding elsewhere are in;
    /// no new chunk is folded meanwhile.
    closing: bool,
}

impl Training {
    pub fn new(assignments: Assignments, sum: RoundSum, dp: Option<PrivateRound>, population: Vec<RegionId>) -> Self {
        Self {
            assignments,
            acc: Some(sum),
            metrics: MetricsMean::default(),
            contributors: Vec::new(),
            dp,
            fold_seconds: 0.0,
            update_bytes: 0,
            population,
            streams: std::collections::HashMap::new(),
            broken: None,
            closing: false,
        }
    }

    /// Client updates counted: one per client, a region's count per regional aggregate.
    fn reported(&self) -> u32 {
        self.contributors.iter().map(|c| c.clients).sum()
    }
}

/// Whether `client` may stream an update of `total_values` for `task` now.
///
/// # Errors
/// Unknown or closed task, another client's task, a client that already reported, was
/// dropped or was refused for good, or a wrong length.
pub(in crate::round) fn begin_upload(
    t: &Training,
    core: &RunCore,
    task: &TaskId,
    client: &ClientId,
    total_values: u64,
) -> Result<UploadTicket, RoundError> {
    open_assignment(t, core, task, client)?;
    let global = core.global()?;
    let expected = global.params.len() as u64;
    if total_values != expected {
        return Err(RoundError::UpdateLength { expected, got: total_values });
    }
    let compression = core.compression_here();
    let plain = compression == crate::plan::Compression::None;
    let global = (!plain).then(|| std::sync::Arc::clone(global));
    // A plain FedAvg sum folds chunks as they arrive (and can subtract them again).
    let stream = (plain && matches!(t.acc, Some(RoundSum::Mean(_)))).then(|| core.streams.clone());
    Ok(UploadTicket { total_values, deadline: core.deadline, compression, global, stream })
}

/// `task`'s assignment, if it is `client`'s and still waits for its update.
///
/// # Errors
/// Unknown or closed task, another client's task, a client that already reported, was
/// dropped or was refused for good.
fn open_assignment<'t>(
    t: &'t Training,
    core: &RunCore,
    task: &TaskId,
    client: &ClientId,
) -> Result<&'t super::Assignment, RoundError> {
    let a = t.assignments.0.get(task).ok_or_else(|| core.not_open(task))?;
    if a.client != *client {
        return Err(RoundError::NotYourTask { task: task.clone(), client: client.clone() });
    }
    let round = core.key.round;
    match a.state {
        AssignmentState::Assigned => Ok(a),
        AssignmentState::Reported => Err(RoundError::AlreadyReported { client: client.clone(), round }),
        AssignmentState::Dropped => Err(RoundError::Dropped { client: client.clone(), round }),
        AssignmentState::Rejected => Err(RoundError::Refused { client: client.clone(), round }),
    }
}

/// Verifies a private update's bound and folds the update into the sum, off the actor's
/// thread (a streamed update's values are folded already: it is counted). Returns how many
/// updates are counted, and whether the round must fail. A streamed update that is refused
/// is subtracted from the sum again.
pub(in crate::round) async fn commit_upload(
    t: &mut Training,
    core: &mut RunCore,
    task: TaskId,
    client: ClientId,
    update: VerifiedUpdate,
) -> (Result<u32, RoundError>, Transition) {
    let streamed = matches!(update.values, UpdateValues::Streamed { .. });
    let out = commit_inner(t, core, task.clone(), client, update).await;
    if streamed {
        // A counted stream is closed already; a refused one is subtracted here.
        streaming::revert(t, &task);
    }
    out
}

async fn commit_inner(
    t: &mut Training,
    core: &mut RunCore,
    task: TaskId,
    client: ClientId,
    update: VerifiedUpdate,
) -> (Result<u32, RoundError>, Transition) {
    if let Err(e) = begin_upload(t, core, &task, &client, update.values.len()) {
        return (Err(e), Transition::Stay);
    }
    let registered = t.assignments.0[&task].registered_samples;
    let members = t.assignments.0[&task].members.max(1);
    if update.contributors == 0 || update.contributors > members {
        return (
            Err(RoundError::Contributors { field: "trailer.contributors", got: update.contributors, max: members }),
            Transition::Stay,
        );
    }
    if update.samples == 0 {
        return (Err(RoundError::ZeroSamples), Transition::Stay);
    }
    if update.samples > registered {
        return (Err(RoundError::TooManySamples { client, claimed: update.samples, registered }), Transition::Stay);
    }
    if let Err(e) = check_scopes(core, &t.assignments.0[&task].region, &update.scopes) {
        return (Err(e), Transition::Stay);
    }
    let key = core.key.clone();
    // At the global tier a private run's regional aggregates are noised releases (models),
    // folded by their share of the denominator.
    let private = core.privacy_here().map(|p| (p.mechanism, p.over_bound));
    if update.is_delta != private.is_some() {
        return (Err(RoundError::UpdateKind { expected: private.is_some(), got: update.is_delta }), Transition::Stay);
    }
    // Central DP: the coordinator verifies every update's norm against C.
    let bound = match (private, &t.dp) {
        (Some((DpMechanism::Central, over)), Some(dp)) => Some((dp.mechanism.clip_norm, over)),
        _ => None,
    };
    let VerifiedUpdate { values, samples, metrics, update_norm, contributors, scopes, reference, wire_bytes, .. } =
        update;
    // A statistic that does not fit the model refuses the update before anything is folded.
    let arch = core.plan.model.architecture();
    if let Some(r) = &reference
        && let Err(e) = r.validate(arch.input_dim(), arch.classes())
    {
        return (Err(RoundError::Reference(e.to_string())), Transition::Stay);
    }
    // DP-FedAvg weighs every clipped update alike; FedAvg by sample count.
    let weight = if private.is_some() { 1.0 } else { samples as f64 };
    let param_count = values.len();
    let (result, reclipped, took, fold_cpu) = match values {
        UpdateValues::Streamed { .. } => {
            let (result, took, cpu) = streaming::count(t, &task, weight);
            (result, None, took, cpu)
        }
        UpdateValues::Staged(mut values) => {
            let Some(mut acc) = t.acc.take() else {
                return (
                    Err(RoundError::Internal("the running sum is missing".into())),
                    Transition::fail("the running sum is missing"),
                );
            };
            #[cfg(test)]
            let panic_here = core.env.settings.fold_fault.as_ref() == Some(&client);
            // Folding is O(model): off the reactor. Only this run waits for it.
            let folded = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let cpu_before = fedra_telemetry::thread_cpu_seconds();
                #[cfg(test)]
                if panic_here {
                    panic!("injected fold fault");
                }
                let mut reclipped = None;
                let mut result = Ok(());
                if let Some((c, over)) = bound {
                    let norm = fedra_dp::noise::l2_norm(values.as_slice());
                    // The norm before clipping is at least the norm of what was sent after it: a
                    // smaller claim is a lie about the one number that steers adaptive clipping.
                    if update_norm < norm * (1.0 - fedra_dp::noise::CLIP_TOLERANCE) {
                        result = Err(RoundError::Privacy(PrivacyError::NormUnderReported {
                            reported: update_norm,
                            received: norm,
                        }));
                    } else if norm > c * (1.0 + fedra_dp::noise::CLIP_TOLERANCE) {
                        if over == OverBound::Reject {
                            result = Err(RoundError::Privacy(PrivacyError::OverClipBound { norm, bound: c }));
                        } else if let Err(e) = fedra_dp::noise::clip_l2(values.as_mut_slice(), c) {
                            result = Err(RoundError::Privacy(e.into()));
                        } else {
                            reclipped = Some(norm);
                        }
                    }
                }
                if result.is_ok() {
                    result = acc.fold(values.as_slice(), weight).map_err(RoundError::from);
                }
                drop(values);
                let cpu = (fedra_telemetry::thread_cpu_seconds() - cpu_before).max(0.0);
                (acc, result, reclipped, started.elapsed(), cpu)
            })
            .await;
            let (acc, result, reclipped, took, fold_cpu) = match folded {
                Ok(r) => r,
                Err(join) => {
                    // The sum went down with the fold: this round cannot finish, the rest can.
                    let why = if join.is_panic() { "the fold panicked" } else { "the fold was cancelled" };
                    error!(run = %key.run, round = key.round, client = %client, "{why}");
                    return (
                        Err(RoundError::Internal(format!("{why}; round {} fails", key.round))),
                        Transition::fail(format!("aggregation failed: {why}")),
                    );
                }
            };
            t.acc = Some(acc);
            (result, reclipped, took, fold_cpu)
        }
    };
    t.fold_seconds += took.as_secs_f64();
    metrics::histogram!("fedra_fold_seconds").record(took.as_secs_f64());
    let region = t.assignments.0[&task].region.clone();
    if result.is_ok() {
        t.update_bytes += wire_bytes;
        metrics::counter!("fedra_fold_bytes_total").increment(4 * param_count);
        metrics::counter!("fedra_update_bytes_total", "region" => region.to_string()).increment(wire_bytes);
        crate::crash::point("folded");
    }
    if let Err(e) = result {
        core.cost.refused(&region, fold_cpu);
        if matches!(e, RoundError::Privacy(_)) {
            // Refused for good: the client may not retry this round, and it is on record.
            if let Some(a) = t.assignments.0.get_mut(&task) {
                a.state = AssignmentState::Rejected;
            }
            core.release(vec![task.clone()], false);
            warn!(run = %key.run, round = key.round, client = %client, error = %e, "update refused");
            if let Err(se) =
                core.env.store.reject_update(&key.run, key.round, key.attempt, &client, &e.to_string()).await
            {
                error!(run = %key.run, client = %client, error = %se, "cannot record the refusal");
            }
            let draft = crate::audit::draft(
                crate::audit::COORDINATOR,
                fedra_types::audit::AuditAction::UpdateRefused,
                format!("round {}: update of client {client} refused: {e}", key.round),
            )
            .run(&key.run);
            if let Err(se) = crate::audit::record(core.env.store.as_ref(), draft).await {
                error!(run = %key.run, client = %client, error = %se, "cannot audit the refusal");
            }
        }
        return (Err(e), Transition::Stay);
    }
    if let Some(dp) = &mut t.dp {
        // Adaptive clipping's bit, from the client's norm before clipping.
        dp.count_sum += if update_norm <= dp.mechanism.clip_norm { 1 } else { -1 };
    }
    let detail = reclipped.map(|norm| {
        warn!(run = %key.run, round = key.round, client = %client, norm, "update over the clipping bound re-clipped");
        format!("re-clipped by the coordinator from norm {norm}")
    });
    let a = t.assignments.0.get_mut(&task).expect("checked by begin_upload");
    a.state = AssignmentState::Reported;
    if let Some(r) = reference
        && core.plan.privacy.is_none()
    {
        match core.references.entry(region.clone()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(*r);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if let Err(e) = o.get_mut().merge(&r) {
                    warn!(run = %key.run, client = %client, error = %e, "drift statistics not merged");
                }
            }
        }
    }
    // The client is free for other runs; its task stays known for precise answers.
    core.release(vec![task], false);
    t.metrics.add(&metrics, samples);
    *core.compute.entry(region.clone()).or_default() += metrics.train_seconds.max(0.0);
    core.cost.update(&region, wire_bytes, fold_cpu, metrics.train_seconds);
    metrics::counter!("fedra_updates_reported_total").increment(1);
    t.contributors.push(Contributor {
        client: client.clone(),
        region: region.clone(),
        samples,
        clients: contributors,
        scopes,
    });
    let reported = t.reported();
    core.queue_update(ParticipationRecord {
        run: key.run.clone(),
        round: key.round,
        attempt: key.attempt,
        client: client.clone(),
        region: region.clone(),
        status: ParticipationStatus::Reported,
        samples,
        metrics: Some(metrics),
        update_norm: Some(update_norm),
        detail,
    });
    info!(run = %key.run, round = key.round, client = %client, samples, reported, "update folded");
    let target = core.plan.clients_per_round;
    core.emit(RunEventKind::UpdateReceived { client, region, samples, reported, target, metrics });
    (Ok(reported), Transition::Stay)
}

/// Reported ε is accepted only where a region noised for this coordinator: at the global
/// tier, in a private run, and only for the participant's own scope `<model>@<region>`.
fn check_scopes(
    core: &RunCore,
    region: &RegionId,
    scopes: &[crate::checkpoint::ScopeEpsilon],
) -> Result<(), RoundError> {
    if scopes.is_empty() {
        return Ok(());
    }
    if !core.env.settings.tier.is_global() || core.plan.privacy.is_none() {
        return Err(RoundError::Scopes("only a regional aggregate of a private run reports privacy scopes".into()));
    }
    let own = crate::privacy::PrivacyScope::new(core.plan.model.name(), region.clone()).to_string();
    match scopes.iter().find(|s| s.scope != own) {
        Some(other) => Err(RoundError::Scopes(format!("scope {:?} is not this participant's ({own})", other.scope))),
        None => Ok(()),
    }
}

/// The end-of-training rules (see the module doc).
pub(in crate::round) async fn check_end(t: &mut Training, core: &mut RunCore) -> Transition {
    if let Some(why) = t.broken.take() {
        return Transition::fail(why);
    }
    let now = Instant::now();
    let plan = &core.plan;
    let reported = t.reported();
    let quorum = reported >= plan.quorum();
    let target_met =
        reported >= plan.clients_per_round && plan.privacy.as_ref().is_none_or(|p| p.sampling == Sampling::Fixed);
    let outstanding = t.assignments.outstanding();
    let past_deadline = now >= core.deadline;
    if target_met || (quorum && (outstanding == 0 || past_deadline)) {
        // Chunks folding on upload threads finish first (each reports back and checks the
        // end again): the sum is read and streams are subtracted only when none is in flight.
        if streaming::folding(t) {
            t.closing = true;
            return Transition::Stay;
        }
        // Participations are on record before the round can be committed; a store that
        // cannot take them fails the round rather than publishing contributors it lost.
        if let Err(e) = core.flush_updates().await {
            return Transition::fail(format!("store failure: cannot record updates: {e}"));
        }
        let regions: Vec<RegionId> = if core.plan.regions.is_all() {
            let mut r: Vec<RegionId> = t.contributors.iter().map(|c| c.region.clone()).collect();
            if r.is_empty() {
                r = t.population.clone();
            }
            r.sort();
            r.dedup();
            r
        } else {
            core.plan.regions.iter().cloned().collect()
        };
        let regions = match publication_targets(core, &t.contributors, regions).await {
            Ok(r) => r,
            Err(reason) => return Transition::fail(reason),
        };
        // Uploads still streaming will not be counted: what they folded comes out first.
        streaming::revert_all(t);
        if let Some(why) = t.broken.take() {
            return Transition::fail(why);
        }
        let Some(acc) = t.acc.take() else { return Transition::fail("the running sum is missing") };
        core.round_update_bytes = t.update_bytes;
        info!(run = %core.key.run, round = core.key.round, reported, "round aggregating");
        return aggregating::start(
            core,
            acc,
            std::mem::take(&mut t.contributors),
            t.metrics.mean(),
            t.dp.take(),
            t.fold_seconds,
            regions,
        );
    }
    let unreachable = reported as usize + t.assignments.outstanding_clients() < plan.quorum() as usize;
    if unreachable || past_deadline {
        let reason = if past_deadline {
            format!("deadline passed with {reported} updates, quorum is {}", plan.min_clients)
        } else {
            format!("only {reported} updates and no client left to report, quorum is {}", plan.min_clients)
        };
        return Transition::fail(reason);
    }
    Transition::Stay
}

/// The regions this round's checkpoint may be written to under the policy in force: those of
/// `targets` that the policy allows for every contributing origin. Each region withheld is
/// audited with the rule; no region left fails the round (nothing may be published).
///
/// The aggregate leaves an origin when it is aggregated elsewhere or published to another
/// region; it may then do so only under the origin's export terms (contributors from that
/// origin in *this* round, a DP release, its noise). A round that would break them fails,
/// naming the rule: the running sum cannot shed one origin's updates once folded.
async fn publication_targets(
    core: &RunCore,
    contributors: &[crate::checkpoint::Contributor],
    targets: Vec<RegionId>,
) -> Result<Vec<RegionId>, String> {
    let Some(policy) = core.env.settings.governance.snapshot() else { return Ok(targets) };
    let mut origins: Vec<RegionId> = contributors.iter().map(|c| c.region.clone()).collect();
    origins.sort();
    origins.dedup();
    let (allowed, withheld) = policy.publishable(&origins, &targets);
    let drafts: Vec<_> = withheld
        .iter()
        .map(|(region, why)| {
            crate::audit::draft(
                crate::audit::COORDINATOR,
                fedra_types::audit::AuditAction::PublicationWithheld,
                format!("round {}: {why}", core.key.round),
            )
            .run(&core.key.run)
            .region(region)
        })
        .collect();
    if !drafts.is_empty() {
        core.env.store.append_audit(&drafts).await.map_err(|e| format!("store failure: cannot audit: {e}"))?;
    }
    if allowed.is_empty() {
        let why = withheld.iter().map(|(_, why)| why.as_str()).collect::<Vec<_>>().join("; ");
        return Err(format!("no region may receive this round's model under policy set {}: {why}", policy.sha256()));
    }
    let noise = core.plan.privacy.as_ref().map(|p| p.noise_multiplier);
    for origin in &origins {
        let leaves = policy.location != *origin || allowed.iter().any(|t| t != origin);
        let count = contributors.iter().filter(|c| c.region == *origin).map(|c| c.clients).sum();
        if leaves && let Err(refusal) = policy.set.export_allowed(origin, count, noise) {
            let why = refusal.to_string();
            return Err(format!("export refused under policy set {}: {why}", policy.sha256()));
        }
    }
    Ok(allowed)
}
