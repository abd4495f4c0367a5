//! Crash injection: the real `fedra-coordinator` binary, run as a child process with
//! `FEDRA_CRASH_AT` naming one crash point (`fedra_coordinator::crash::POINTS`), kills
//! itself with SIGKILL at that point of a run; the test proves it died of that signal,
//! restarts it on the same store and port, lets the run finish and checks what a crash
//! must never break: every round completes exactly once with its lineage, every recorded
//! checkpoint's files verify (signature, digests) and nothing unrecorded stays in a
//! region's tree, no update is counted twice, and a private run's ledger keeps every
//! reservation it made (charged for each completed round).

use crate::sandbox::*;
use fedra_coordinator::crash::{ENV, POINTS};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::privacy::LedgerState;
use fedra_coordinator::store::{LedgerFilter, RoundStatus, Store};
use fedra_sim::cluster_process::ProcessSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);
pub(crate) const ROUNDS: u32 = 3;

/// The roles beside [`open_policy`]'s everything-allowed rules, whose generous budget is
/// where the coordinator process gets its privacy budget.
const POLICY_RULES: &str = r#"[roles]
submit = ["admin"]
approve = ["admin"]
read_audit = ["admin"]
[roles.read_checkpoints]
admin = "all"
"#;

/// Four clients in two regions, each with a held-out split (for evaluation).
fn clients() -> Vec<ClientSpec> {
    (0..4)
        .map(|i| {
            let mut spec = blob_client(i, ["eu", "us"][i % 2], 4, 2, 120);
            spec.holdout = Some(blob_client(i + 10, &spec.region, 4, 2, 40).dataset);
            spec
        })
        .collect()
}

/// Runs a three-round run under a coordinator armed to crash at `point`, then checks the
/// invariants; `private` runs DP-FedAvg (without evaluation) instead of FedAvg evaluated
/// every round.
async fn crash_at(point: &str, private: bool) -> anyhow::Result<()> {
    assert!(POINTS.contains(&point), "{point} is not a crash point");
    let policy = tempfile::tempdir()?;
    std::fs::write(policy.path().join("policy.toml"), open_policy(1000, POLICY_RULES))?;
    let spec =
        ProcessSpec { binary: crate::cli::coordinator_binary(), env: vec![(ENV.to_string(), point.to_string())] };
    // 16-byte chunks: the model and every update take several, so "mid" is a real middle.
    let builder = Cluster::builder().process(spec).policy(policy.path(), "eu").chunk_bytes(16).clients(clients());
    let mut cluster = builder.start().await?;
    let mut p = plan(4, 2, ROUNDS, 4, 4);
    if private {
        p.privacy = Some(central(1.0, 1.0, 4));
    } else {
        p.evaluation.every_rounds = 1;
    }
    let run = cluster.control().await?.submit(&p).await?;

    // The fault happened: the process died of SIGKILL, at this point.
    let status = cluster.wait_coordinator_exit(WAIT).await?;
    assert_eq!(status.signal(), Some(9), "{point}: the coordinator ended with {status}");
    let log = std::fs::read_to_string(cluster.data_dir().join("coordinator.log"))?;
    assert!(log.contains(&format!("fedra crash point {point} reached")), "{point}: not in the log:\n{log}");

    cluster.set_coordinator_env(ENV, None)?;
    cluster.restart_coordinator().await?;
    let end = wait_for_end(&cluster, &run, WAIT).await?;
    assert_succeeded(&end);
    assert_eq!(end.completed_rounds, ROUNDS, "{point}");

    let store = open_store(&cluster).await?;
    let run = RunId::new(run)?;
    let rounds = store.list_rounds(&run).await?;
    let done: BTreeMap<u32, u32> = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Done)
        .map(|r| (r.round, r.attempt))
        .fold(BTreeMap::new(), |mut m, (round, attempt)| {
            assert!(m.insert(round, attempt).is_none(), "{point}: round {round} completed twice: {rounds:#?}");
            m
        });
    assert_eq!(done.keys().copied().collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>(), "{point}: {rounds:#?}");

    // No update counted twice: one participation per client and attempt, and each completed
    // round's count is the reported updates of its own attempt.
    let participations = store.list_participations(&run).await?;
    let mut seen = BTreeSet::new();
    for p in &participations {
        assert!(seen.insert((p.round, p.attempt, p.client.clone())), "{point}: {} twice in {}", p.client, p.round);
    }
    for r in rounds.iter().filter(|r| r.status == RoundStatus::Done) {
        let reported = participations
            .iter()
            .filter(|p| (p.round, p.attempt) == (r.round, r.attempt))
            .filter(|p| p.status == fedra_coordinator::store::ParticipationStatus::Reported)
            .count();
        assert_eq!(reported as u32, r.reported, "{point}: round {} attempt {}", r.round, r.attempt);
    }

    check_checkpoints(&cluster, &store, &run, point).await?;
    if private {
        check_ledger(&store, &run, &done, point).await?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// Every recorded checkpoint verifies in every region it names, its parent is the round
/// before, and every round directory on disk is one of them (nothing unrecorded, no
/// temporary file).
pub(crate) async fn check_checkpoints(
    cluster: &Cluster,
    store: &dyn Store,
    run: &RunId,
    point: &str,
) -> anyhow::Result<()> {
    let trust = cluster.pki().trust()?;
    let cps = store.list_checkpoints(&Default::default()).await?;
    let ours: Vec<_> = cps.iter().filter(|c| &c.run == run).collect();
    assert_eq!(ours.iter().map(|c| c.round).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>(), "{point}");
    for w in ours.windows(2) {
        assert_eq!(w[1].parent.as_ref(), Some(&w[0].id), "{point}: lineage");
    }
    let mut recorded = BTreeSet::new();
    for c in &ours {
        assert_eq!(c.locations.len(), 2, "{point}: published to eu and us");
        for (_, weights) in &c.locations {
            let weights = weights.file_path().expect("a file in the artifact directory");
            let dir = weights.parent().expect("a round directory");
            fedra_cli::verify::verify_dir(dir, &trust).map_err(|e| anyhow::anyhow!("{point}: {e}"))?;
            recorded.insert(dir.to_path_buf());
        }
    }
    let on_disk = round_dirs(cluster.artifact_dir())?;
    assert_eq!(on_disk, recorded, "{point}: the round directories on disk are the recorded ones");
    Ok(())
}

/// `<artifacts>/<region>/<model>/<run>/round-NNNN`, and no staging file (`*#N`, `*.tmp`)
/// anywhere in them.
fn round_dirs(root: &Path) -> anyhow::Result<BTreeSet<std::path::PathBuf>> {
    let mut out = BTreeSet::new();
    let children = |p: &Path| -> anyhow::Result<Vec<std::path::PathBuf>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(p)? {
            let path = e?.path();
            if path.is_dir() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                v.push(path);
            }
        }
        Ok(v)
    };
    for region in children(root)? {
        for model in children(&region)? {
            for run in children(&model)? {
                for round in children(&run)? {
                    for f in std::fs::read_dir(&round)? {
                        let f = f?.path();
                        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        assert!(
                            !name.ends_with(".tmp") && !name.contains('#'),
                            "a staging file stayed: {}",
                            f.display()
                        );
                    }
                    out.insert(round);
                }
            }
        }
    }
    Ok(out)
}

/// The ledger never under-counts: every completed round's attempt is charged, and no
/// reservation made by any attempt has gone (an interrupted attempt's still counts).
async fn check_ledger(store: &dyn Store, run: &RunId, done: &BTreeMap<u32, u32>, point: &str) -> anyhow::Result<()> {
    let ledger = store.list_ledger(&LedgerFilter { run: Some(run.clone()), ..Default::default() }).await?;
    for (round, attempt) in done {
        let entry = ledger.iter().find(|e| (e.round, e.attempt) == (*round, *attempt));
        let state = entry.map(|e| e.state);
        assert_eq!(state, Some(LedgerState::Charged), "{point}: round {round} attempt {attempt}: {ledger:#?}");
    }
    let attempts: BTreeSet<(u32, u32)> = ledger.iter().map(|e| (e.round, e.attempt)).collect();
    let rounds = store.list_rounds(run).await?;
    for r in &rounds {
        assert!(attempts.contains(&(r.round, r.attempt)), "{point}: attempt {r:?} reserved nothing: {ledger:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_privacy_reservation_loses_no_reservation() -> anyhow::Result<()> {
    crash_at("privacy_reserved", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_selection_repeats_the_round_once() -> anyhow::Result<()> {
    crash_at("selected", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_broadcast_repeats_the_round_once() -> anyhow::Result<()> {
    crash_at("mid_broadcast", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_counts_no_update_twice() -> anyhow::Result<()> {
    crash_at("mid_upload", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_fold_counts_no_update_twice() -> anyhow::Result<()> {
    crash_at("folded", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_publication_leaves_no_unrecorded_checkpoint() -> anyhow::Result<()> {
    crash_at("mid_publication", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_checkpoint_files_and_their_record_leaves_no_orphan() -> anyhow::Result<()> {
    crash_at("checkpoint_written", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_commit_and_the_charge_still_charges_the_round() -> anyhow::Result<()> {
    crash_at("round_committed", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_evaluation_finishes_the_run() -> anyhow::Result<()> {
    crash_at("evaluating", false).await
}

/// Values sent, values in all, and the coordinator's answer to a cut-off upload.
type CutOff = (usize, usize, Result<u32, String>);

/// Cuts the sidecar's round-1 upload off halfway, as a killed sidecar's would be, and
/// reports the coordinator's answer to the test.
struct KilledMidUpload {
    crashed: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<CutOff>>>,
}

impl fedra_client::session::UploadFaults for KilledMidUpload {
    fn crash_after_values(&self, _run: &str, round: u32, total: usize) -> Option<usize> {
        (round == 1).then_some(total / 2)
    }

    fn crashed(&self, _run: &str, _round: u32, sent: usize, total: usize, answer: Result<u32, String>) {
        if let Some(tx) = self.crashed.lock().unwrap().take() {
            let _ = tx.send((sent, total, answer));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_mid_upload_restarts_and_rejoins_the_next_round() -> anyhow::Result<()> {
    let (dim, classes) = (8u32, 3u32);
    let len = (dim * classes + classes) as usize;
    let (mut cluster, _) = scripted_cluster(3, len, |_| 20, 16).await?;
    let (tx, crashed) = tokio::sync::oneshot::channel();
    let trainer = ScriptedTrainer::new(7, len, 20);
    let info = trainer.info();
    let faults = std::sync::Arc::new(KilledMidUpload { crashed: std::sync::Mutex::new(Some(tx)) });
    cluster.add_client_faulty("phoenix", "eu", vec![info.clone()], Box::new(trainer), faults);
    cluster.wait_connected(WAIT).await?;
    // A deadline longer than the test waits: round 1 can only close because the restarted
    // sidecar's registration (a new session) tells the coordinator its old task is lost.
    let mut p = plan(dim, classes, 2, 4, 3);
    p.round_deadline_seconds = 2.0 * WAIT.as_secs_f64();
    let run = cluster.control().await?.submit(&p).await?;

    // The upload broke off halfway and the coordinator refused what it got; then the
    // sidecar's process is gone.
    let (sent, total, answer) = tokio::time::timeout(WAIT, crashed).await??;
    assert!(sent > 0 && sent < total, "{sent} of {total}");
    let refusal = answer.expect_err("a cut-off upload is never counted");
    assert!(refusal.contains("without a trailer"), "{refusal}");
    let phoenix = cluster.clients_mut().iter_mut().find(|c| c.id == "phoenix").expect("phoenix");
    phoenix.stop().await;
    // The same identity starts again and takes part in round 2.
    cluster.add_client_with("phoenix", "eu", vec![info], Box::new(ScriptedTrainer::new(7, len, 20)));
    cluster.wait_connected(WAIT).await?;
    let end = wait_for_end(&cluster, &run, WAIT).await?;
    assert_succeeded(&end);

    let store = open_store(&cluster).await?;
    let parts = store.list_participations(&RunId::new(run)?).await?;
    let of_phoenix: Vec<_> =
        parts.iter().filter(|p| p.client.as_str() == "phoenix").map(|p| (p.round, p.status)).collect();
    use fedra_coordinator::store::ParticipationStatus::{Dropped, Reported};
    assert_eq!(of_phoenix, [(1, Dropped), (2, Reported)], "{parts:#?}");
    let rounds = store.list_rounds(&RunId::new(end.id.clone())?).await?;
    let done: Vec<_> = rounds.iter().filter(|r| r.status == RoundStatus::Done).map(|r| (r.round, r.reported)).collect();
    assert_eq!(done, [(1, 3), (2, 4)], "round 1 without its broken upload, round 2 with the rejoined sidecar");
    cluster.shutdown().await;
    Ok(())
}
