//! Regional inference checkpoints end to end: signed manifests that `verify`, `pull` and
//! the inference node refuse when tampered with; the promotion gate per region; rollback;
//! swaps under load; canary routing and its rule; drift on live inputs.

use crate::sandbox::*;
use fedra_cli::control::{ControlClient, ControlError};
use fedra_client::infer::RunningNode;
use fedra_client::infer::node::NodeSettings;
use fedra_client::infer::stats::DriftSettings;
use fedra_client::trainer::{EvalOutcome, TrainError, TrainOutcome, TrainSpec, Trainer};
use fedra_proto::pb;
use fedra_proto::pb::inference_service_client::InferenceServiceClient;
use fedra_types::plan::{PromoteTo, PromotionPlan};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A scripted trainer whose held-out accuracy the test sets (a region's data changing).
struct Switch {
    inner: ScriptedTrainer,
    accuracy: Arc<Mutex<f64>>,
}

impl Trainer for Switch {
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        self.inner.train(spec, global)
    }
    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError> {
        self.inner.evaluate(spec, params)
    }
    fn evaluate_holdout(&self, _spec: &TrainSpec, _params: &[f32]) -> Result<EvalOutcome, TrainError> {
        let accuracy = *self.accuracy.lock().unwrap();
        Ok(EvalOutcome { loss: 1.0 - accuracy, accuracy, samples: 50 })
    }
    fn samples(&self) -> u64 {
        self.inner.samples()
    }
}

const DIM: u32 = 4;
const CLASSES: u32 = 3;

/// One scripted client per region, whose held-out accuracy the returned handles set.
async fn federation(regions: &[&str]) -> anyhow::Result<(Cluster, Vec<Arc<Mutex<f64>>>)> {
    federation_with(Cluster::builder(), regions).await
}

async fn federation_with(builder: ClusterBuilder, regions: &[&str]) -> anyhow::Result<(Cluster, Vec<Arc<Mutex<f64>>>)> {
    let len = (DIM * CLASSES + CLASSES) as usize;
    let mut cluster = builder.start().await?;
    let mut knobs = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let accuracy = Arc::new(Mutex::new(0.9));
        let inner = ScriptedTrainer::new(i as u64, len, 20);
        let info = inner.info();
        cluster.add_client_with(
            &format!("{region}-{i}"),
            region,
            vec![info],
            Box::new(Switch { inner, accuracy: accuracy.clone() }),
        );
        knobs.push(accuracy);
    }
    cluster.wait_connected(WAIT).await?;
    Ok((cluster, knobs))
}

/// Runs one evaluated training run to its end; its published checkpoint.
async fn train(cluster: &Cluster, clients: u32, promotion: PromotionPlan, seed: u64) -> anyhow::Result<String> {
    let mut p = plan(DIM, CLASSES, 1, clients, clients);
    p.evaluation.every_rounds = 1;
    p.promotion = promotion;
    p.seed = seed;
    let run = cluster.control().await?.submit(&p).await?;
    let status = wait_for_end(cluster, &run, WAIT).await?;
    assert_succeeded(&status);
    Ok(status.published_checkpoint.expect("published"))
}

/// Follows `WatchServing` until `checkpoint` is in `state` (candidate, canary or serving)
/// in `region`'s registry of the model.
async fn wait_state(
    control: &mut ControlClient,
    region: &str,
    checkpoint: &str,
    state: pb::ModelState,
) -> anyhow::Result<()> {
    let mut sets = control.watch_serving(region, "test-lr").await?;
    tokio::time::timeout(WAIT, async {
        while let Some(set) = sets.message().await? {
            let mut entries = set.serving.iter().chain(set.canary.iter()).chain(set.candidates.iter());
            if entries.any(|e| e.checkpoint_id == checkpoint && e.state == state as i32) {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the serving watch ended")
    })
    .await?
}

fn entry<'a>(entries: &'a [pb::RegistryEntry], checkpoint: &str) -> &'a pb::RegistryEntry {
    entries.iter().find(|e| e.checkpoint_id == checkpoint).expect("registered")
}

async fn start_node(cluster: &Cluster, region: &str, report: Duration) -> anyhow::Result<RunningNode> {
    let settings = NodeSettings {
        region: region.into(),
        model: "test-lr".into(),
        name: format!("node-{region}"),
        price_per_cpu_hour: 0.05,
        drift: DriftSettings { psi_threshold: 0.25, min_rows: 500 },
        report_interval: report,
    };
    cluster.inference_node(settings).await
}

/// Waits until the node serves `serving` (and `canary`).
async fn wait_loaded(node: &RunningNode, serving: &str, canary: Option<&str>) -> anyhow::Result<()> {
    let mut loaded = node.state.loaded();
    let want = (Some(serving.to_string()), canary.map(str::to_string));
    tokio::time::timeout(WAIT, loaded.wait_for(|ids| *ids == want)).await??;
    Ok(())
}

async fn predictor(node: &RunningNode) -> anyhow::Result<InferenceServiceClient<tonic::transport::Channel>> {
    Ok(InferenceServiceClient::connect(format!("http://{}", node.addr)).await?)
}

fn rows(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * DIM as usize).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn request(inputs: Vec<f32>, key: &str) -> pb::PredictRequest {
    pb::PredictRequest { features: DIM, inputs, routing_key: key.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_checkpoints_are_refused_by_verify_pull_and_the_node() -> anyhow::Result<()> {
    let (cluster, _) = federation(&["eu"]).await?;
    let serving = PromotionPlan { promote_to: PromoteTo::Serving, ..PromotionPlan::default() };
    let cp = train(&cluster, 1, serving, 1).await?;
    let mut control = cluster.control().await?;
    wait_state(&mut control, "eu", &cp, pb::ModelState::Serving).await?;
    let trust = cluster.pki().trust()?;

    // Untouched: verify (offline and online) and pull accept it.
    let run = cp.split('.').next().unwrap();
    let dir = cluster.artifact_dir().join("eu").join("test-lr").join(run).join("round-0001");
    let chain = fedra_cli::verify::verify_dir(&dir, &trust).map_err(anyhow::Error::msg)?;
    assert_eq!(chain[0].checkpoint_id, cp);
    fedra_cli::verify::verify_remote(&mut control, &cp, &trust).await?;
    let out = tempfile::tempdir()?;
    control.pull_checkpoint(&cp, out.path()).await?;
    assert!(out.path().join("manifest.sig").exists());

    // One flipped bit in the weights file: every consumer refuses, naming it.
    let weights = dir.join("model.safetensors");
    let good = std::fs::read(&weights)?;
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, &bad)?;
    let e = fedra_cli::verify::verify_dir(&dir, &trust).unwrap_err();
    assert!(e.contains("weights file sha256"), "{e}");
    let e = control.pull_checkpoint(&cp, &out.path().join("bad")).await.unwrap_err();
    // The coordinator checks the digest as it streams, so the pull fails either way.
    assert!(e.to_string().contains("sha256"), "{e}");
    assert!(!out.path().join("bad").join("model.safetensors").exists());
    let node = start_node(&cluster, "eu", Duration::from_secs(3600)).await?;
    tokio::time::timeout(WAIT, node.state.refusal_count().wait_for(|n| *n > 0)).await??;
    assert!(node.state.refusals()[0].contains(&cp), "{:?}", node.state.refusals());
    let err = predictor(&node).await?.predict(request(rows(1, 1), "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "nothing unverified is served");
    std::fs::write(&weights, &good)?;

    // A manifest changed in the store (where FetchCheckpoint reads it): the signature fails.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", cluster.data_dir().join("fedra.db").display())).await?;
    sqlx::query(
        "UPDATE checkpoints SET manifest_json = replace(manifest_json, '\"round\": 1', '\"round\": 7') WHERE id = ?",
    )
    .bind(&cp)
    .execute(&db)
    .await?;
    let e = control.pull_checkpoint(&cp, &out.path().join("forged")).await.unwrap_err();
    assert!(matches!(e, ControlError::Untrusted(ref m) if m.contains("signature")), "{e}");
    let e = fedra_cli::verify::verify_remote(&mut control, &cp, &trust).await.unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    node.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_holds_a_worse_candidate_in_one_region_and_rollback_restores() -> anyhow::Result<()> {
    let (cluster, knobs) = federation(&["eu", "us"]).await?;
    let gate =
        PromotionPlan { promote_to: PromoteTo::Serving, tolerance: 0.05, min_samples: 40, ..PromotionPlan::default() };
    let first = train(&cluster, 2, gate, 1).await?;
    let mut control = cluster.control().await?;
    for region in ["eu", "us"] {
        wait_state(&mut control, region, &first, pb::ModelState::Serving).await?;
    }
    let us_node = start_node(&cluster, "us", Duration::from_secs(3600)).await?;
    wait_loaded(&us_node, &first, None).await?;

    // eu's held-out data got harder: the next model is 0.2 worse there, as good in us.
    *knobs[0].lock().unwrap() = 0.7;
    let second = train(&cluster, 2, gate, 2).await?;
    wait_state(&mut control, "us", &second, pb::ModelState::Serving).await?;
    wait_loaded(&us_node, &second, None).await?;
    let eu = control.list_models(Some("eu"), Some("test-lr"), true).await?;
    let held = entry(&eu, &second);
    assert_eq!(held.state, pb::ModelState::Candidate as i32, "not promoted in eu");
    assert!(!held.gate_passed && held.gate_detail.contains("accuracy 0.7000 < serving 0.9000"), "{}", held.gate_detail);
    assert_eq!(entry(&eu, &first).state, pb::ModelState::Serving as i32);
    // An approver cannot promote it past the gate without saying so.
    let refused = control
        .promote_model(pb::PromoteModelRequest {
            region: "eu".into(),
            model_name: "test-lr".into(),
            checkpoint_id: second.clone(),
            to: pb::ModelState::Serving as i32,
            reason: "try".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ControlError::Rpc { code: tonic::Code::FailedPrecondition, message } if message.contains("promotion gate")),
        "{refused}"
    );

    // Rollback in us restores the first checkpoint in one step; the node follows.
    let r = control.rollback_model("us", "test-lr", "a customer reported bad answers").await?;
    assert_eq!((r.rolled_back.as_str(), r.serving.map(|e| e.checkpoint_id)), (second.as_str(), Some(first.clone())));
    wait_loaded(&us_node, &first, None).await?;
    let history = control.model_history(Some("us"), Some("test-lr")).await?;
    let last = history.last().expect("transitions");
    assert_eq!(
        (last.checkpoint_id.as_str(), last.reason.as_str()),
        (first.as_str(), "a customer reported bad answers")
    );
    assert!(last.actor.starts_with("fedra://admin/"), "{}", last.actor);
    let audit = control.audit(Default::default()).await?;
    assert!(audit.iter().any(|e| e.draft.action.as_str() == "checkpoint_rolled_back"), "rollback audited");
    assert!(
        audit
            .iter()
            .any(|e| e.draft.action.as_str() == "checkpoint_gated" && e.draft.detail.contains("gate failed in eu"))
    );
    us_node.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_fail_no_request_and_a_canary_gets_its_share_then_the_rule_promotes_it() -> anyhow::Result<()> {
    let (cluster, _) = federation(&["eu"]).await?;
    // The canary rule decides after 400 canary requests: after the 2,000 counted below.
    let manual = PromotionPlan {
        canary_fraction: 0.1,
        canary_min_requests: 400,
        canary_max_error_rate: 0.0,
        ..PromotionPlan::default()
    };
    let first = train(&cluster, 1, PromotionPlan { promote_to: PromoteTo::Serving, ..manual }, 1).await?;
    let second = train(&cluster, 1, manual, 2).await?;
    let mut control = cluster.control().await?;
    wait_state(&mut control, "eu", &second, pb::ModelState::Candidate).await?;
    let node = start_node(&cluster, "eu", Duration::from_millis(100)).await?;
    wait_loaded(&node, &first, None).await?;

    // A bounded request loop runs while the second checkpoint is promoted to serving and
    // back (a rollback): every request is answered, by one checkpoint or the other.
    let mut client = predictor(&node).await?;
    let load = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut served = std::collections::BTreeMap::<String, u32>::new();
            for i in 0..600u64 {
                let r = client.predict(request(rows(8, i), "")).await?.into_inner();
                assert_eq!(r.predictions.len(), 8);
                *served.entry(r.checkpoint_id).or_default() += 1;
            }
            anyhow::Ok(served)
        })
    };
    let promote = |to: pb::ModelState| pb::PromoteModelRequest {
        region: "eu".into(),
        model_name: "test-lr".into(),
        checkpoint_id: second.clone(),
        to: to as i32,
        reason: "test".into(),
        ..Default::default()
    };
    control.promote_model(promote(pb::ModelState::Serving)).await?;
    wait_loaded(&node, &second, None).await?;
    control.rollback_model("eu", "test-lr", "back").await?;
    wait_loaded(&node, &first, None).await?;
    let served = load.await??;
    assert_eq!(served.values().sum::<u32>(), 600, "no request failed across two swaps");

    // The rolled-back checkpoint cannot come back, but a third run can canary.
    let third = train(&cluster, 1, manual, 3).await?;
    wait_state(&mut control, "eu", &third, pb::ModelState::Candidate).await?;
    control
        .promote_model(pb::PromoteModelRequest { checkpoint_id: third.clone(), ..promote(pb::ModelState::Canary) })
        .await?;
    wait_loaded(&node, &first, Some(&third)).await?;
    let mut canary = 0;
    for i in 0..2000u64 {
        let r = client.predict(request(rows(1, i), "")).await?.into_inner();
        canary += u32::from(r.canary);
        assert_eq!(&r.checkpoint_id, if r.canary { &third } else { &first });
    }
    assert!((140..=260).contains(&canary), "10 % ± 3 % of 2000 requests, got {canary}");
    // Sticky routing: one key always lands on the same arm.
    let arm = client.predict(request(rows(1, 7), "user-42")).await?.into_inner().canary;
    for _ in 0..20 {
        assert_eq!(client.predict(request(rows(1, 7), "user-42")).await?.into_inner().canary, arm);
    }
    // The canary rule (400 canary requests, no errors) promotes it from the node's reports
    // while traffic goes on.
    let traffic = {
        let mut client = client.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                if client.predict(request(rows(1, i), "")).await.is_err() {
                    return;
                }
            }
        })
    };
    wait_state(&mut control, "eu", &third, pb::ModelState::Serving).await?;
    wait_loaded(&node, &third, None).await?;
    traffic.abort();
    let history = control.model_history(Some("eu"), Some("test-lr")).await?;
    assert!(history.iter().any(|t| t.actor == "coordinator (canary rule)" && t.to == pb::ModelState::Serving as i32));
    let stats = client.stats(pb::NodeStatsRequest {}).await?.into_inner();
    let arm = stats.arms.iter().find(|a| a.checkpoint_id == third).expect("arm");
    assert!(arm.p99_ms >= arm.p50_ms && arm.p50_ms > 0.0, "{arm:?}");
    node.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_detected_on_a_shifted_stream_and_not_on_an_unshifted_one() -> anyhow::Result<()> {
    let (dim, classes) = (DIM as usize, CLASSES as usize);
    let specs: Vec<_> = (0..2).map(|i| blob_client(i, "eu", dim, classes, 600)).collect();
    let live: Vec<f32> = specs.iter().flat_map(|s| s.dataset.features.clone()).collect();
    let cluster = Cluster::builder().clients(specs).start().await?;
    cluster.wait_connected(WAIT).await?;
    let mut p = plan(DIM, CLASSES, 1, 2, 2);
    // No held-out splits here: with nothing serving yet, a gate that asks for no
    // evaluation samples passes.
    p.promotion = PromotionPlan {
        promote_to: PromoteTo::Serving,
        min_samples: 0,
        retrain_on_drift: true,
        ..PromotionPlan::default()
    };
    let run = cluster.control().await?.submit(&p).await?;
    let cp = wait_for_end(&cluster, &run, WAIT).await?.published_checkpoint.expect("published");
    let mut control = cluster.control().await?;
    wait_state(&mut control, "eu", &cp, pb::ModelState::Serving).await?;
    let node = start_node(&cluster, "eu", Duration::from_secs(3600)).await?;
    wait_loaded(&node, &cp, None).await?;
    let mut client = predictor(&node).await?;

    // The clients' own rows: the distribution the reference was built from.
    for chunk in live.chunks(64 * dim) {
        client.predict(request(chunk.to_vec(), "")).await?;
    }
    let report = node.state.report();
    let drift = report.drift.expect("drift is reported");
    assert!(drift.has_reference && drift.rows == 1200, "{drift:?}");
    assert!(!drift.drifted && drift.max_psi < 0.1, "unshifted: {drift:?}");

    // The serving checkpoint changes nothing; a new node sees the same rows shifted by +2.
    let shifted_node = start_node(&cluster, "eu", Duration::from_millis(100)).await?;
    wait_loaded(&shifted_node, &cp, None).await?;
    let mut shifted = predictor(&shifted_node).await?;
    for chunk in live.chunks(64 * dim) {
        shifted.predict(request(chunk.iter().map(|v| v + 2.0).collect(), "")).await?;
    }
    // The node reports it to the coordinator, and the plan asked for it: a retraining run
    // from the serving checkpoint is submitted, once, and audited with the numbers; its
    // checkpoint passes the plan's gate and the node loads it.
    let mut loaded = shifted_node.state.loaded();
    tokio::time::timeout(WAIT, loaded.wait_for(|ids| ids.0.as_ref().is_some_and(|s| *s != cp))).await??;
    let retrain = control.list().await?.into_iter().find(|r| r.id != run).expect("the retraining run").id;
    let audit = control.audit(Default::default()).await?;
    let why = audit.iter().find(|e| e.draft.actor == "coordinator (drift)").expect("the retraining is audited");
    assert!(why.draft.detail.contains(&format!("reported drift in eu against {cp}")), "{}", why.draft.detail);
    let psi: f64 = why.draft.detail.split("max PSI ").nth(1).and_then(|t| t.split(',').next()).unwrap().parse()?;
    assert!(psi > 1.0, "{}", why.draft.detail);
    // `fedra drift status` lists the node's latest report (one per node name).
    let nodes = control.drift_status(Some("eu"), Some("test-lr")).await?;
    assert!(nodes.iter().any(|n| n.report.as_ref().is_some_and(|r| r.node == "node-eu")), "{nodes:?}");
    let status = wait_for_end(&cluster, &retrain, WAIT).await?;
    assert_succeeded(&status);
    assert_eq!(control.list().await?.len(), 2, "one retraining run, not one for the retrained checkpoint too");
    shifted_node.shutdown().await;
    node.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

/// Promotion rules beside [`open_policy`]'s everything-allowed ones: in eu two approvals
/// and a measured gate the run passes; in us a sample minimum it cannot meet, without
/// override.
const PROMOTION_POLICY_RULES: &str = r#"[[promotion]]
model = "*"
region = "eu"
tolerance = 0.05
min_samples = 40
approvals = 2
[[promotion]]
model = "*"
region = "us"
min_samples = 1000
[roles]
submit = ["scientist", "admin"]
approve = ["approver", "admin"]
read_audit = ["admin"]
[roles.read_checkpoints]
admin = "all"
approver = "all"
"#;

fn promote(region: &str, checkpoint: &str, override_gate: bool) -> pb::PromoteModelRequest {
    pb::PromoteModelRequest {
        region: region.into(),
        model_name: "test-lr".into(),
        checkpoint_id: checkpoint.into(),
        to: pb::ModelState::Serving as i32,
        reason: "reviewed the evaluation".into(),
        override_gate,
        ..Default::default()
    }
}

fn rpc_error(e: &ControlError) -> (tonic::Code, &str) {
    match e {
        ControlError::Rpc { code, message } => (*code, message.as_str()),
        other => panic!("expected an RPC error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_gates_need_distinct_approvers_and_refuse_overrides_they_do_not_allow() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("policy.toml"), open_policy(100, PROMOTION_POLICY_RULES))?;
    let hash = fedra_policy::PolicySet::load(dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?.sha256().to_string();
    let (cluster, _) = federation_with(Cluster::builder().policy(dir.path(), "eu"), &["eu", "us"]).await?;
    // The plan would promote straight to serving, and its own gate passes everywhere.
    let plan = PromotionPlan { promote_to: PromoteTo::Serving, min_samples: 0, ..PromotionPlan::default() };
    let cp = train(&cluster, 2, plan, 1).await?;
    let mut admin = cluster.control().await?;
    wait_state(&mut admin, "eu", &cp, pb::ModelState::Candidate).await?;
    wait_state(&mut admin, "us", &cp, pb::ModelState::Candidate).await?;
    let eu = admin.list_models(Some("eu"), Some("test-lr"), false).await?;
    let held = entry(&eu, &cp);
    assert!(held.gate_passed, "{}", held.gate_detail);
    assert_eq!((held.approvals_needed, held.approvers.len()), (2, 0), "held for approvals, not promoted by rule");
    assert!(held.policy_rule.contains("policy.toml:19 (promotion model=* region=eu"), "{}", held.policy_rule);
    let us = admin.list_models(Some("us"), Some("test-lr"), false).await?;
    let failed = entry(&us, &cp);
    assert!(!failed.gate_passed && !failed.gate_overridable, "{failed:?}");
    assert!(failed.gate_detail.contains("50 < 1000 evaluation samples"), "{}", failed.gate_detail);
    let history = admin.model_history(Some("eu"), Some("test-lr")).await?;
    assert!(history[0].reason.contains(&hash), "the set it was judged under: {}", history[0].reason);

    // Four eyes: the run's submitter (the admin here) may not approve its model.
    let e = admin.promote_model(promote("eu", &cp, false)).await.unwrap_err();
    let (code, message) = rpc_error(&e);
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(message.contains("may not approve it"), "{message}");
    let mut ann = cluster.control_as(&"fedra://approver/ann".parse()?).await?;
    let mut bob = cluster.control_as(&"fedra://approver/bob".parse()?).await?;
    let first = ann.promote_model(promote("eu", &cp, false)).await?;
    assert_eq!(first.state, pb::ModelState::Candidate as i32, "one approval of two: nothing moves");
    assert_eq!(first.approvers, ["fedra://approver/ann"]);
    let e = ann.promote_model(promote("eu", &cp, false)).await.unwrap_err();
    assert_eq!(rpc_error(&e).0, tonic::Code::AlreadyExists, "{e}");
    let second = bob.promote_model(promote("eu", &cp, false)).await?;
    assert_eq!(second.state, pb::ModelState::Serving as i32, "the second approval promotes");
    assert_eq!(second.approvers, ["fedra://approver/ann", "fedra://approver/bob"]);

    // The us rule failed the gate and allows no override, whoever asks and however.
    let e = ann.promote_model(promote("us", &cp, true)).await.unwrap_err();
    let (code, message) = rpc_error(&e);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
    assert!(message.contains("under policy rule") && message.contains("allows no override"), "{message}");
    assert_eq!(entry(&admin.list_models(Some("us"), None, false).await?, &cp).state, pb::ModelState::Candidate as i32);

    let audit = admin.audit(Default::default()).await?;
    let approvals: Vec<_> = audit
        .iter()
        .filter(|e| e.draft.action.as_str() == "checkpoint_approved")
        .map(|e| e.draft.actor.as_str())
        .collect();
    assert_eq!(approvals, ["fedra://approver/ann", "fedra://approver/bob"]);
    cluster.shutdown().await;
    Ok(())
}
