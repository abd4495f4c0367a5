//! Client-level differential privacy end to end: DP-FedAvg rounds charge a persisted
//! ledger, manifests carry the guarantee, budgets refuse over-spending runs and rounds, a
//! crash between reservation and release over-counts rather than under-counts, the
//! coordinator verifies the clipping bound, and Poisson sampling really samples.

use crate::sandbox::*;
use fedra_cli::control::ControlError;
use fedra_cli::plan_file::PlanFile;
use fedra_cli::status::WatchEvent;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::privacy::LedgerState;
use fedra_coordinator::privacy::accountant::{self, RoundCost};
use fedra_coordinator::privacy::budget::RawBudgetRule;
use fedra_coordinator::privacy::mechanism::{DEFAULT_LATTICE_SLACK, RoundMechanism};
use fedra_coordinator::store::{LedgerFilter, ParticipationStatus, Store};
use fedra_proto::chunking::{chunks, transfer_digest_hex};
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use fedra_types::plan::{Clipping, DpMechanism, OverBound, PrivacyPlan, Sampling};
use fedra_types::run::RunState;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const DELTA: f64 = 1e-6;

fn budget(epsilon: f64) -> RawBudgetRule {
    RawBudgetRule { model: None, region: None, epsilon, delta: DELTA }
}

fn dp_plan(rounds: u32, clients: u32, privacy: PrivacyPlan) -> PlanFile {
    let mut p = plan(10, 3, rounds, clients, clients);
    p.privacy = Some(privacy);
    p
}

/// ε after `rounds` rounds of the mechanism `privacy` builds for the 10→3 test model.
fn epsilon_after(privacy: &PrivacyPlan, rounds: usize) -> f64 {
    let m = RoundMechanism::new(privacy, 33, privacy.clipping.initial_norm(), DEFAULT_LATTICE_SLACK).unwrap();
    let costs: Vec<RoundCost> = vec![m.cost; rounds];
    accountant::epsilon(&costs, DELTA).unwrap().epsilon
}

fn rpc(e: ControlError) -> (Code, String) {
    match e {
        ControlError::Rpc { code, message } => (code, message),
        other => panic!("expected an RPC error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_fedavg_charges_the_ledger_and_manifests_carry_epsilon() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 200)).collect();
    let cluster = Cluster::builder().clients(specs).privacy_budget(budget(100.0)).start().await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&dp_plan(3, 4, central(1.0, 0.5, 4))).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);

    // Both regions' scopes were charged three rounds, nothing left reserved.
    let scopes = control.privacy_status(None, None).await?;
    assert_eq!(scopes.iter().map(|s| s.scope.as_str()).collect::<Vec<_>>(), ["test-lr@eu", "test-lr@us"]);
    let want = epsilon_after(&central(1.0, 0.5, 4), 3);
    for s in &scopes {
        assert_eq!((s.rounds_charged, s.rounds_reserved), (3, 0), "{s:?}");
        assert!((s.epsilon_spent - want).abs() < 1e-9, "{} vs {want}", s.epsilon_spent);
        assert!((s.epsilon_remaining.unwrap() - (100.0 - want)).abs() < 1e-9);
        assert_eq!((s.accountant.as_str(), s.noise_multiplier, s.clip_norm, s.sampling_rate), ("zcdp", 1.0, 0.5, 1.0));
    }
    // ρ per round is just above 1/(2z²) (discretisation), composed over 3 rounds and
    // converted below the closed-form bound ρ + 2√(ρ ln 1/δ).
    let rho = 3.0 * 0.5;
    assert!(want > rho && want < rho * 1.01 + 2.0 * (rho * 1.01 * (1.0 / DELTA).ln()).sqrt(), "{want}");

    // The published manifest states the guarantee.
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    assert_eq!(manifest.strategy, "dp_fed_avg");
    let p = manifest.privacy.clone().expect("a private run's manifest has a privacy block");
    assert_eq!((p.mechanism.as_str(), p.accountant.as_str(), p.rounds), ("central", "zcdp", 3));
    assert_eq!((p.noise_multiplier, p.clip_norm, p.sampling_rate, p.delta), (1.0, 0.5, 1.0, DELTA));
    assert!((p.epsilon - want).abs() < 1e-9 && p.scopes.len() == 2, "{p:?}");
    assert!(p.noise_std >= 0.5 && p.noise_std < 0.5 * 1.01, "noise std {} vs z·C = 0.5", p.noise_std);
    let weights = read_weights(&pulled.weights, &manifest)?;
    assert!(weights.iter().all(|v| v.is_finite()));

    // Every reservation and every charge is in the audit log, in round order.
    let log = control.audit(Default::default()).await?;
    let of = |action| {
        log.iter()
            .filter(|e| e.draft.action == action && e.draft.run.as_deref() == Some(run.as_str()))
            .map(|e| e.draft.detail.clone())
            .collect::<Vec<_>>()
    };
    let reserved = of(fedra_types::audit::AuditAction::PrivacyReserved);
    assert_eq!(reserved.len(), 3, "{reserved:?}");
    assert!(reserved[0].starts_with("round 1 attempt 1 reserved; ε after it: test-lr@eu ε "), "{}", reserved[0]);
    assert_eq!(of(fedra_types::audit::AuditAction::PrivacyCharged).len(), 3);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_overspending_runs_and_rounds_naming_the_numbers() -> anyhow::Result<()> {
    let one = central(1.0, 0.5, 2);
    // Room for four rounds of this mechanism but not five.
    let limit = (epsilon_after(&one, 4) + epsilon_after(&one, 5)) / 2.0;
    let specs: Vec<_> = (0..2).map(|i| blob_client(i, "eu", 10, 3, 100)).collect();
    let cluster = Cluster::builder()
        .clients(specs)
        .privacy_budget(RawBudgetRule { model: None, region: Some("eu".into()), epsilon: limit, delta: DELTA })
        .start()
        .await?;
    let mut control = cluster.control().await?;

    // A run that could never fit is refused at submit, with the scope, budget, spent and cost.
    let (code, message) = rpc(control.submit(&dp_plan(5, 2, central(1.0, 0.5, 2))).await.unwrap_err());
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    for part in ["scope test-lr@eu", &format!("budget ε={limit}"), "spent ε=0.0000", "its 5 rounds would cost"] {
        assert!(message.contains(part), "{message:?} should contain {part:?}");
    }
    // A scope without any budget is refused too.
    let mut us = dp_plan(1, 2, central(1.0, 0.5, 2));
    us.regions = vec!["us".into()];
    let (code, message) = rpc(control.submit(&us).await.unwrap_err());
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("no privacy budget is configured for scope test-lr@us"), "{message}");
    assert!(control.list().await?.is_empty(), "refused runs leave nothing behind");

    // Two runs that each fit alone but not together. They share both clients, so the
    // scheduler interleaves their rounds; whichever round would be the fifth charge is
    // refused before it starts, and its run fails saying why. Four rounds complete in all.
    let a = control.submit(&dp_plan(3, 2, central(1.0, 0.5, 2))).await?;
    let b = control.submit(&dp_plan(3, 2, central(1.0, 0.5, 2))).await?;
    let sa = wait_for_end(&cluster, &a, Duration::from_secs(60)).await?;
    let sb = wait_for_end(&cluster, &b, Duration::from_secs(60)).await?;
    assert_eq!(sa.completed_rounds + sb.completed_rounds, 4, "{sa:?} {sb:?}");
    let failed: Vec<_> = [&sa, &sb].into_iter().filter(|s| s.state == RunState::Failed).collect();
    assert!(!failed.is_empty(), "{sa:?} {sb:?}");
    for s in failed {
        let failure = s.failure.clone().unwrap_or_default();
        assert!(failure.contains("privacy budget of scope test-lr@eu would be exceeded"), "{failure}");
    }
    let scope = &control.privacy_status(None, Some("eu")).await?[0];
    assert_eq!(scope.rounds_charged, 4, "{scope:?}");
    assert!(scope.epsilon_spent <= limit, "{scope:?}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_reservation_and_release_counts_the_reservation() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..3).map(|i| blob_client(i, "eu", 10, 3, 300)).collect();
    // Round 1's training waits for the test: the kill finds its reservation made and no
    // update counted, however fast training is.
    let hold = TrainingHold::round(1);
    let mut cluster = held_cluster(Cluster::builder().privacy_budget(budget(100.0)), specs, &hold).await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&dp_plan(2, 3, central(1.0, 0.5, 3))).await?;
    // All three clients hold round 1's task: the round reserved its cost before asking
    // them to train, and none of them can report.
    hold.wait_holding(3, Duration::from_secs(60)).await?;
    let scope = control.privacy_status(None, None).await?.remove(0);
    assert_eq!((scope.rounds_reserved, scope.rounds_charged), (1, 0), "{scope:?}");
    cluster.restart_coordinator().await?;
    // Right after the restart (the held clients cannot come back yet, so no new attempt
    // has reserved anything): the interrupted round's reservation is still spent.
    let mut control = cluster.control().await?;
    let scope = control.privacy_status(None, None).await?.remove(0);
    assert_eq!((scope.rounds_reserved, scope.rounds_charged), (1, 0), "{scope:?}");
    let one_round = epsilon_after(&central(1.0, 0.5, 3), 1);
    assert!((scope.epsilon_spent - one_round).abs() < 1e-9, "{} vs {one_round}", scope.epsilon_spent);
    hold.release();

    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let store = open_store(&cluster).await?;
    let entries = store.list_ledger(&LedgerFilter { run: Some(RunId::new(run)?), scope: None }).await?;
    let charged = entries.iter().filter(|e| e.state == LedgerState::Charged).count();
    let reserved = entries.iter().filter(|e| e.state == LedgerState::Reserved).count();
    assert_eq!((charged, reserved), (2, 1), "{entries:#?}");
    // Three rounds' worth is spent for two released ones: over-counted, never under.
    let scope = control.privacy_status(None, None).await?.remove(0);
    let want = epsilon_after(&central(1.0, 0.5, 3), 3);
    assert!((scope.epsilon_spent - want).abs() < 1e-9, "{} vs {want}", scope.epsilon_spent);
    cluster.shutdown().await;
    Ok(())
}

fn delta_upload(task: &str, client: &str, values: &[f32], norm: f64) -> Vec<pb::UpdatePart> {
    let mut parts = vec![pb::UpdatePart {
        part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
            task_id: task.into(),
            client_id: client.into(),
            total_values: values.len() as u64,
            is_delta: true,
            samples: 0,
        })),
    }];
    parts.extend(chunks(values, 16).map(|c| pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) }));
    parts.push(pb::UpdatePart {
        part: Some(pb::update_part::Part::Trailer(pb::UpdateTrailer {
            contributors: 1,
            samples: 10,
            metrics: None,
            update_norm: norm,
            digest: transfer_digest_hex(values),
            scopes: vec![],
            reference: None,
        })),
    });
    parts
}

type TaskStreams = Vec<tonic::Streaming<pb::Task>>;

/// Registers raw gRPC clients, submits `plan`, and returns each client's task id (and the
/// task streams: a client whose stream is dropped has gone away).
async fn raw_round(
    cluster: &Cluster,
    ids: &[&str],
    plan: &PlanFile,
) -> anyhow::Result<(Vec<FleetServiceClient<tonic::transport::Channel>>, String, Vec<String>, TaskStreams)> {
    let mut streams = Vec::new();
    let mut fleets = Vec::new();
    for id in ids {
        // Each client is its own certified connection: identity comes from the certificate.
        let mut fleet = cluster.fleet_as(id, "eu").await?;
        fleet
            .register(pb::RegisterRequest {
                members: 1,
                session_id: String::new(),
                client_id: (*id).into(),
                region: "eu".into(),
                datasets: vec![pb::DatasetDescriptor { name: "d".into(), samples: 10, features: 10, classes: 3 }],
                capabilities: None,
            })
            .await?;
        streams.push(fleet.subscribe(pb::SubscribeRequest { client_id: (*id).into() }).await?.into_inner());
        fleets.push(fleet);
    }
    let run = cluster.control().await?.submit(plan).await?;
    let mut tasks = Vec::new();
    for s in &mut streams {
        let task = tokio::time::timeout(Duration::from_secs(10), s.message()).await??.expect("task");
        let p = task.privacy.expect("a private run's task carries its clipping norm");
        assert_eq!((p.clip_norm, p.local_noise_std), (0.5, 0.0));
        tasks.push(task.task_id);
    }
    Ok((fleets, run, tasks, streams))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_verifies_the_clipping_bound() -> anyhow::Result<()> {
    let cluster = Cluster::builder().privacy_budget(budget(100.0)).start().await?;
    let small: Vec<f32> = vec![0.05; 33]; // norm ≈ 0.287 ≤ C = 0.5
    let big: Vec<f32> = vec![1.0; 33]; // norm √33 ≈ 5.74 > C
    // Reported exactly: a pre-clipping norm below the received update's is refused as a lie.
    let big_norm = 33f64.sqrt();

    // Reject: the over-bound update is refused, named, and recorded; the round goes on.
    let mut p = dp_plan(1, 2, central(1.0, 0.5, 2));
    p.min_clients = 1;
    let (fleets, run, tasks, first) = raw_round(&cluster, &["a", "b"], &p).await?;
    let e = fleets[0]
        .clone()
        .push_update(tokio_stream::iter(delta_upload(&tasks[0], "a", &big, big_norm)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("update norm 5.74") && e.message().contains("clipping bound 0.5"),
        "{}",
        e.message()
    );
    // A model where an update is expected is refused too.
    let mut as_model = delta_upload(&tasks[1], "b", &small, 0.29);
    if let Some(pb::update_part::Part::Header(h)) = &mut as_model[0].part {
        h.is_delta = false;
    }
    let e = fleets[1].clone().push_update(tokio_stream::iter(as_model)).await.unwrap_err();
    assert!(e.message().contains("header.is_delta is false"), "{}", e.message());
    fleets[1].clone().push_update(tokio_stream::iter(delta_upload(&tasks[1], "b", &small, 0.29))).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, Duration::from_secs(30)).await?);
    let store = open_store(&cluster).await?;
    let parts = store.list_participations(&RunId::new(run)?).await?;
    let a = parts.iter().find(|p| p.client.as_str() == "a").unwrap();
    assert_eq!(a.status, ParticipationStatus::Rejected);
    assert!(a.detail.as_deref().unwrap_or_default().contains("exceeds the clipping bound"), "{a:?}");

    drop(first); // a and b go away: the next round can only pick c.

    // Re-clip: the same update is scaled back to C, folded, and the event recorded.
    let mut p = dp_plan(1, 1, central(1.0, 0.5, 1));
    p.privacy.as_mut().unwrap().over_bound = OverBound::Reclip;
    let (fleets, run, tasks, _streams) = raw_round(&cluster, &["c"], &p).await?;
    fleets[0].clone().push_update(tokio_stream::iter(delta_upload(&tasks[0], "c", &big, big_norm))).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, Duration::from_secs(30)).await?);
    let parts = store.list_participations(&RunId::new(run)?).await?;
    assert_eq!(parts[0].status, ParticipationStatus::Reported);
    assert!(parts[0].detail.as_deref().unwrap_or_default().starts_with("re-clipped by the coordinator from norm 5.74"));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_sampling_samples_and_adaptive_clipping_moves_c() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..24).map(|i| blob_client(i, "eu", 10, 3, 40)).collect();
    let cluster = Cluster::builder().clients(specs).privacy_budget(budget(500.0)).start().await?;
    let mut control = cluster.control().await?;
    let rounds = 6;
    let mut p = plan(10, 3, rounds, 24, 1);
    p.privacy = Some(PrivacyPlan {
        mechanism: DpMechanism::Central,
        noise_multiplier: 0.8,
        clipping: Clipping::Adaptive {
            initial_norm: 5.0,
            target_quantile: 0.5,
            learning_rate: 0.5,
            count_noise_std: 0.0,
        },
        over_bound: OverBound::Reject,
        sampling: Sampling::Poisson { rate: 0.5 },
        expected_clients: 12,
    });
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(90)).await?;
    assert_succeeded(&status);
    // A private run's events name no client; its rounds still count them.
    let selected: Vec<usize> = status.rounds.iter().map(|r| r.selected as usize).collect();
    assert_eq!(selected.len(), rounds as usize);
    // 6 rounds × 24 clients × q = 0.5: 72 expected, sd ≈ 6; and not a fixed count.
    let total: usize = selected.iter().sum();
    assert!((42..=102).contains(&total), "{selected:?}");
    assert!(selected.iter().any(|&n| n != selected[0]) || selected[0] != 24, "{selected:?}");

    let store = open_store(&cluster).await?;
    let entries = store.list_ledger(&LedgerFilter { run: Some(RunId::new(run)?), scope: None }).await?;
    assert_eq!(entries.len(), rounds as usize);
    assert!(entries.iter().all(|e| e.accountant.as_str() == "poisson_rdp" && e.sampling_rate == 0.5));
    // Every norm is far below C = 5: C shrinks round after round towards the median norm.
    let clips: Vec<f64> = entries.iter().map(|e| e.clip_norm).collect();
    assert_eq!(clips[0], 5.0);
    assert!(clips.windows(2).all(|w| w[1] < w[0]), "C should shrink: {clips:?}");
    assert!(entries.iter().all(|e| e.next_clip_norm.is_some()));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dp_clients_noise_their_own_updates() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..3).map(|i| blob_client(i, "eu", 10, 3, 200)).collect();
    let cluster = Cluster::builder().clients(specs).privacy_budget(budget(100.0)).start().await?;
    let mut control = cluster.control().await?;
    let mut privacy = central(2.0, 0.5, 3);
    privacy.mechanism = DpMechanism::Local;
    let run = control.submit(&dp_plan(2, 3, privacy)).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let p = manifest.privacy.clone().expect("privacy block");
    assert_eq!((p.mechanism.as_str(), p.accountant.as_str(), p.rounds), ("local", "zcdp", 2));
    // Each client's release is the lattice Gaussian at z·C = 1.0 (ρ ≈ 1/(2·2²) per round).
    assert!(p.noise_std >= 1.0 && p.noise_std < 1.01, "{p:?}");
    let want = {
        let mut d = central(2.0, 0.5, 3);
        d.mechanism = DpMechanism::Local;
        epsilon_after(&d, 2)
    };
    assert!((p.epsilon - want).abs() < 1e-9, "{} vs {want}", p.epsilon);
    // Noised updates are not clipped again by the coordinator (their norm is far over C).
    let store = open_store(&cluster).await?;
    let parts = store.list_participations(&RunId::new(run)?).await?;
    assert!(parts.iter().all(|p| p.status == ParticipationStatus::Reported), "{parts:#?}");
    let weights = read_weights(&pulled.weights, &manifest)?;
    assert!(weights.iter().all(|v| v.is_finite()));
    cluster.shutdown().await;
    Ok(())
}

/// A private run discloses what its ε covers and round-level counts, nothing per client:
/// no client id and no per-client metric in the live or replayed event stream, in `run show`
/// or in the published manifest; and it may not evaluate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_run_discloses_no_client_and_no_per_client_metric() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 200)).collect();
    let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    let cluster = Cluster::builder().clients(specs).privacy_budget(budget(100.0)).start().await?;
    let mut control = cluster.control().await?;
    let mut evaluating = dp_plan(2, 4, central(1.0, 0.5, 4));
    evaluating.evaluation.every_rounds = 1;
    let (code, message) = rpc(control.submit(&evaluating).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("federated evaluation"), "{message}");

    let run = control.submit(&dp_plan(2, 4, central(1.0, 0.5, 4))).await?;
    let mut live = Vec::new();
    let mut stream = control.watch(&run).await?;
    while let Some(e) = stream.next().await {
        let e = e?;
        let end = matches!(e, WatchEvent::RunFinished { .. });
        live.push(e);
        if end {
            break;
        }
    }
    drop(stream);
    let replayed: Vec<WatchEvent> = control.watch(&run).await?.collect::<Result<Vec<_>, _>>().await?;
    let status = control.get(&run).await?;
    assert_eq!(status.state, RunState::Succeeded);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_ref().expect("published"), dir.path()).await?;
    let manifest_text = std::fs::read_to_string(pulled.weights.with_file_name("manifest.json"))?;
    let manifest = read_manifest(&pulled.weights)?;

    let shown = format!("{live:?} {replayed:?} {status:?} {manifest_text}");
    for id in &ids {
        assert!(!shown.contains(id.as_str()), "client {id} is disclosed: {shown}");
    }
    for events in [&live, &replayed] {
        assert!(events.iter().any(|e| matches!(e, WatchEvent::Published { .. })), "{events:?}");
        for e in events {
            match e {
                WatchEvent::UpdateReceived { .. } | WatchEvent::Evaluated { .. } => panic!("disclosed: {e:?}"),
                WatchEvent::Aggregated { clients, samples, metrics, .. } => {
                    assert_eq!((*clients, *samples, *metrics), (4, 0, Default::default()), "{e:?}");
                }
                WatchEvent::Selected { clients, .. } => assert!(clients.is_empty(), "{e:?}"),
                _ => {}
            }
        }
    }
    for r in &status.rounds {
        assert_eq!((r.reported, r.samples, r.metrics), (4, 0, None), "{r:?}");
    }
    assert!(manifest.contributors.is_empty() && manifest.total_samples == 0, "{manifest_text}");
    assert_eq!(manifest.regions.values().map(|r| (r.clients, r.samples)).collect::<Vec<_>>(), [(2, 0), (2, 0)]);
    assert!(manifest.privacy.expect("privacy block").metrics_withheld);
    cluster.shutdown().await;
    Ok(())
}
