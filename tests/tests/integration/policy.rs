//! Policies over real gRPC: a coordinator with a policy set in force refuses, parks or
//! admits plans naming the rules, approvers approve, and the audit log's hash chain holds on
//! a real run and breaks at the first altered, inserted or deleted row.

use crate::sandbox::*;
use anyhow::Context as _;
use fedra_cli::control::ControlError;
use fedra_types::audit::{AuditAction, ChainBreak, verify};
use fedra_types::identity::Identity;
use fedra_types::run::RunState;
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

/// Regions eu (EU) and us (US). EU data is aggregated and published only in the EU; US
/// data anywhere, leaving the US with at least `us_export_min` contributors. Budget ε 100
/// at δ 1e-6 everywhere; non-private runs allowed. `approvals` is appended as written.
fn write_policy_with(dir: &Path, approvals: &str, us_export_min: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"version = 1

[[region]]
name = "eu"
jurisdiction = "EU"

[[region]]
name = "us"
jurisdiction = "US"

# EU data stays in the EU.
[[residency]]
origin = "EU"
aggregate_at = ["EU"]
export_min_clients = 1
publish_to = ["EU"]

[[residency]]
origin = "US"
aggregate_at = ["*"]
export_min_clients = {us_export_min}
publish_to = ["*"]

[[privacy]]
model = "*"
region = "*"
epsilon = 100
delta = 1e-6
allow_non_private = true

{approvals}

[roles]
submit = ["scientist", "admin"]
approve = ["approver", "admin"]
cancel_any = ["admin"]
read_audit = ["compliance", "admin"]

[roles.read_checkpoints]
scientist = "all"
compliance = "all"
admin = "all"
"#
        ),
    )?;
    Ok(())
}

/// The set above with a long-run approval rule (more than `max_rounds` rounds).
fn write_policy(dir: &Path, max_rounds: u32) -> anyhow::Result<()> {
    write_policy_with(dir, &format!("[[approval]]\nname = \"long-run\"\napprovals = 1\nrounds_above = {max_rounds}"), 1)
}

fn rpc(e: &anyhow::Error) -> (Code, String) {
    match e.downcast_ref::<ControlError>() {
        Some(ControlError::Rpc { code, message }) => (*code, message.clone()),
        _ => panic!("expected an RPC error, got {e:#}"),
    }
}

fn who(uri: &str) -> Identity {
    uri.parse().expect("valid identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_would_aggregate_eu_data_in_the_us_is_refused_naming_the_rule() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy(dir.path(), 100)?;
    let cluster = Cluster::builder().policy(dir.path(), "us").start().await?;
    let mut scientist = cluster.control_as(&who("fedra://scientist/alice")).await?;
    let mut eu_plan = plan(4, 2, 1, 1, 1);
    eu_plan.regions = vec!["eu".into()];
    let e = scientist.submit(&eu_plan).await.map_err(anyhow::Error::from).expect_err("refused");
    let (code, message) = rpc(&e);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.starts_with("refused by policy: "), "{message}");
    assert!(message.contains("policy.toml:12 (residency origin=EU"), "the rule's file, line and text: {message}");
    assert!(message.contains("us"), "names the location: {message}");
    // Nothing was stored; the refusal is in the audit log with the submitter.
    assert!(cluster.control().await?.list().await?.is_empty());
    let log = cluster.control_as(&who("fedra://compliance/carol")).await?.audit(Default::default()).await?;
    let refused = log.iter().find(|e| e.draft.action == AuditAction::RunRefused).expect("a run_refused entry");
    assert!(refused.draft.detail.contains("policy.toml:12"), "{}", refused.draft.detail);
    assert!(
        log.iter().any(|e| e.draft.action == AuditAction::RunSubmitted && e.draft.actor == "fedra://scientist/alice")
    );
    // US data may be aggregated here: the same plan on us is admitted.
    let mut us_plan = plan(4, 2, 1, 1, 1);
    us_plan.regions = vec!["us".into()];
    let run = scientist.submit(&us_plan).await?;
    let state = scientist.get(&run).await?.state;
    assert!(matches!(state, RunState::Queued | RunState::Running), "admitted, not parked: {state}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_epsilon_is_above_the_threshold_starts_only_after_an_approver_approves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy_with(dir.path(), "[[approval]]\nname = \"high-epsilon\"\napprovals = 1\nepsilon_above = 5", 1)?;
    let specs = vec![blob_client(0, "eu", 4, 2, 100), blob_client(1, "eu", 4, 2, 100)];
    let cluster = Cluster::builder().policy(dir.path(), "eu").clients(specs).start().await?;
    let mut scientist = cluster.control_as(&who("fedra://scientist/alice")).await?;
    // Two rounds of z = 1: ε ≈ 7.8 at δ = 1e-6, above the rule's 5 (and within the budget).
    let private = || {
        let mut p = plan(4, 2, 2, 2, 2);
        p.privacy = Some(central(1.0, 0.5, 2));
        p
    };
    let run = scientist.submit(&private()).await?;
    let parked = scientist.get(&run).await?;
    assert_eq!(parked.state, RunState::PendingApproval);
    assert_eq!(parked.completed_rounds, 0);
    assert_eq!(parked.approvals_needed, 1);
    let hash = fedra_policy::PolicySet::load(dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?.sha256().to_string();
    assert_eq!(parked.policy_sha256.as_deref(), Some(hash.as_str()), "the run records the set it was admitted under");

    // A scientist cannot approve (not even someone else's run); nor can the submitter.
    let mut bob = cluster.control_as(&who("fedra://scientist/bob")).await?;
    let (code, message) = rpc(&bob.approve(&run).await.map_err(anyhow::Error::from).expect_err("scientists cannot"));
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("role scientist may not call ApproveRun"), "{message}");
    let mut admin_submitter = cluster.control().await?;
    let own = admin_submitter.submit(&private()).await?;
    let (code, message) =
        rpc(&admin_submitter.approve(&own).await.map_err(anyhow::Error::from).expect_err("four eyes"));
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("may not approve it"), "{message}");
    // An approver rejects that one: it ends cancelled, with who and why.
    let e = bob.reject(&own, "no").await.map_err(anyhow::Error::from).expect_err("scientists cannot reject");
    assert_eq!(rpc(&e).0, Code::PermissionDenied);
    let mut approver = cluster.control_as(&who("fedra://approver/dora")).await?;
    assert_eq!(approver.reject(&own, "ε too high for this cohort").await?, RunState::Cancelled);
    let rejected = admin_submitter.get(&own).await?;
    assert_eq!(rejected.state, RunState::Cancelled);
    assert_eq!(rejected.failure.as_deref(), Some("rejected by fedra://approver/dora: ε too high for this cohort"));
    assert_eq!(scientist.get(&run).await?.state, RunState::PendingApproval, "still parked");

    // The approver's approval queues it; it runs to the end.
    let (approvals, needed, state) = approver.approve(&run).await?;
    assert_eq!((approvals, needed, state), (1, 1, RunState::Queued));
    let (code, _) = rpc(&approver.approve(&run).await.map_err(anyhow::Error::from).expect_err("not pending now"));
    assert_eq!(code, Code::FailedPrecondition);
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);

    let log = cluster.control_as(&who("fedra://compliance/carol")).await?.audit(Default::default()).await?;
    let of_run: Vec<_> = log.iter().filter(|e| e.draft.run.as_deref() == Some(run.as_str())).collect();
    let actions: Vec<_> = of_run.iter().map(|e| e.draft.action).collect();
    assert_eq!(actions[..3], [AuditAction::RunSubmitted, AuditAction::RunPendingApproval, AuditAction::RunApproved]);
    assert!(
        of_run[1].draft.detail.contains("approval rule high-epsilon requires 1 approval: projected ε 7.")
            && of_run[1].draft.detail.contains("(approval name=high-epsilon approvals=1 epsilon_above=5)"),
        "{}",
        of_run[1].draft.detail
    );
    assert_eq!(of_run[2].draft.actor, "fedra://approver/dora");
    let rejection = log.iter().find(|e| e.draft.action == AuditAction::RunRejected).expect("audited");
    assert_eq!(
        (rejection.draft.run.as_deref(), rejection.draft.detail.as_str()),
        (Some(own.as_str()), "ε too high for this cohort")
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_holds_on_a_real_run_and_names_the_first_tampered_entry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy(dir.path(), 100)?;
    let specs = vec![blob_client(0, "eu", 4, 2, 100), blob_client(1, "us", 4, 2, 100)];
    let cluster = Cluster::builder().policy(dir.path(), "eu").clients(specs).start().await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(4, 2, 2, 2, 2)).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, Duration::from_secs(60)).await?);
    let mut compliance = cluster.control_as(&who("fedra://compliance/carol")).await?;
    let log = compliance.audit(Default::default()).await?;
    assert!(log.len() >= 3, "{log:?}");
    let (head, _) = verify(&log).expect("an untouched log verifies");
    assert_eq!(head, log.len() as i64);
    // Scientists may not read the log.
    let e = cluster.control_as(&who("fedra://scientist/alice")).await?.audit(Default::default()).await;
    assert_eq!(rpc(&e.map_err(anyhow::Error::from).expect_err("denied")).0, Code::PermissionDenied);

    // Someone with write access to the database file bypasses the append-only triggers.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", cluster.data_dir().join("fedra.db").display())).await?;
    let blocked = sqlx::query("UPDATE audit_log SET detail = 'x' WHERE seq = 2").execute(&db).await;
    assert!(blocked.unwrap_err().to_string().contains("append-only"), "the triggers refuse edits");
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&db).await?;
    sqlx::query("DROP TRIGGER audit_log_no_delete").execute(&db).await?;

    sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 2").execute(&db).await?;
    assert_eq!(verify(&compliance.audit(Default::default()).await?), Err(ChainBreak::Altered { seq: 2 }));
    sqlx::query("UPDATE audit_log SET detail = ? WHERE seq = 2").bind(&log[1].draft.detail).execute(&db).await?;
    assert!(verify(&compliance.audit(Default::default()).await?).is_ok(), "restored");

    sqlx::query("DELETE FROM audit_log WHERE seq = 2").execute(&db).await?;
    assert_eq!(verify(&compliance.audit(Default::default()).await?), Err(ChainBreak::Gap { seq: 3, expected: 2 }));

    // An entry forged in the gap with a fresh hash still does not link to what follows.
    let forged = fedra_types::audit::AuditEntry::chain(
        Some(&log[0]),
        fedra_types::audit::AuditDraft::new(
            log[1].draft.at_ms,
            "fedra://admin/mallory",
            AuditAction::RunApproved,
            "forged",
        ),
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor, action, run_id, region, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, ?)",
    )
    .bind(forged.seq)
    .bind(forged.draft.at_ms)
    .bind(&forged.draft.actor)
    .bind(forged.draft.action.as_str())
    .bind(&forged.draft.detail)
    .bind(&forged.prev_hash)
    .bind(&forged.hash)
    .execute(&db)
    .await?;
    assert_eq!(verify(&compliance.audit(Default::default()).await?), Err(ChainBreak::Unlinked { seq: 3, prev_seq: 2 }));
    db.close().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_go_only_where_the_policy_allows_and_carry_its_hash() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy(dir.path(), 100)?;
    // US clients' own training metrics may leave the coordinator; EU clients' may not.
    let us_metrics = "\n[[privacy]]\nmodel = \"*\"\nregion = \"US\"\nepsilon = 100\ndelta = 1e-6\nallow_non_private = true\nper_client_metrics = true\n";
    let text = std::fs::read_to_string(dir.path().join("policy.toml"))?;
    std::fs::write(dir.path().join("policy.toml"), text + us_metrics)?;
    let hash = fedra_policy::PolicySet::load(dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?.sha256().to_string();
    // EU and US clients aggregated in the EU: the model trained on EU data may go to the EU
    // only, so the us copy is withheld.
    let specs = vec![blob_client(0, "eu", 4, 2, 100), blob_client(1, "us", 4, 2, 100)];
    let cluster = Cluster::builder().policy(dir.path(), "eu").clients(specs).start().await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(4, 2, 2, 2, 2)).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, Duration::from_secs(60)).await?);
    let mut events = control.watch(&run).await?;
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        if let fedra_cli::status::WatchEvent::UpdateReceived { region, metrics, .. } = e? {
            seen.push((region, metrics.loss_after > 0.0));
        }
    }
    seen.sort();
    assert_eq!(seen, [("eu".into(), false), ("eu".into(), false), ("us".into(), true), ("us".into(), true)]);
    let checkpoints = control.list_checkpoints(None, None, Some(&run)).await?;
    assert_eq!(checkpoints.len(), 2);
    for c in &checkpoints {
        assert_eq!(c.regions, ["eu"], "{c:?}");
        let pulled = control.pull_checkpoint(&c.id, &dir.path().join("pulled").join(&c.id)).await?;
        let manifest = read_manifest(&pulled.weights)?;
        assert_eq!(manifest.policy_sha256.as_deref(), Some(hash.as_str()));
        assert_eq!(manifest.published_to.iter().map(ToString::to_string).collect::<Vec<_>>(), ["eu"]);
    }
    let artifacts = cluster.data_dir().join("artifacts");
    assert!(artifacts.join("eu").is_dir() && !artifacts.join("us").exists(), "nothing was written for us");
    let log = cluster.control_as(&who("fedra://compliance/carol")).await?.audit(Default::default()).await?;
    let withheld: Vec<_> = log.iter().filter(|e| e.draft.action == AuditAction::PublicationWithheld).collect();
    assert_eq!(withheld.len(), 2, "one per round");
    assert!(withheld.iter().all(|e| e.draft.region.as_deref() == Some("us")));
    assert!(withheld[0].draft.detail.contains("policy.toml:12"), "{}", withheld[0].draft.detail);
    let published = log.iter().filter(|e| e.draft.action == AuditAction::CheckpointPublished).count();
    assert_eq!(published, 2);

    // Reads follow [roles] read_checkpoints: approvers are not granted any (the table alone
    // would let them read), scientists read every region.
    let mut approver = cluster.control_as(&who("fedra://approver/dora")).await?;
    assert!(approver.list_checkpoints(None, None, Some(&run)).await?.is_empty());
    let e = approver.pull_checkpoint(&checkpoints[0].id, &dir.path().join("nope")).await;
    let (code, message) = rpc(&e.map_err(anyhow::Error::from).expect_err("not granted"));
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("role approver may not read checkpoints"), "{message}");
    let mut scientist = cluster.control_as(&who("fedra://scientist/alice")).await?;
    assert_eq!(scientist.list_checkpoints(None, None, Some(&run)).await?.len(), 2);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tightened_policy_blocks_the_run_at_the_next_round_and_a_loosened_one_resumes_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy(dir.path(), 100)?;
    let hold = TrainingHold::round(1);
    let specs = vec![blob_client(0, "us", 4, 2, 100), blob_client(1, "us", 4, 2, 100)];
    let cluster = held_cluster(Cluster::builder().policy(dir.path(), "eu"), specs, &hold).await?;
    let mut admin = cluster.control().await?;
    let mut us_only = plan(4, 2, 3, 2, 2);
    us_only.regions = vec!["us".into()];
    let run = admin.submit(&us_only).await?;
    let mut events = admin.watch(&run).await?;
    hold.wait_holding(2, Duration::from_secs(30)).await?;

    // Mid-round, US data may no longer be aggregated in the EU.
    let text = std::fs::read_to_string(dir.path().join("policy.toml"))?;
    let tightened =
        text.replacen("origin = \"US\"\naggregate_at = [\"*\"]", "origin = \"US\"\naggregate_at = [\"US\"]", 1);
    assert_ne!(tightened, text);
    std::fs::write(dir.path().join("policy.toml"), &tightened)?;
    admin.apply_policy().await?;
    hold.release();

    // Round 1 finishes under the rules it started with; the run stops before round 2.
    let reason = loop {
        match events.next().await.context("the event stream ended")?? {
            fedra_cli::status::WatchEvent::Blocked { round, reason } => {
                assert_eq!(round, 1);
                break reason;
            }
            fedra_cli::status::WatchEvent::RunFinished { state, .. } => panic!("the run ended ({state}) instead"),
            _ => {}
        }
    };
    assert!(reason.contains("policy.toml:18 (residency origin=US"), "{reason}");
    let status = admin.get(&run).await?;
    assert_eq!((status.state, status.completed_rounds), (RunState::BlockedByPolicy, 1));

    // A policy that allows it again puts it back in the queue; it finishes its rounds.
    std::fs::write(dir.path().join("policy.toml"), &text)?;
    admin.apply_policy().await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    assert_eq!(status.completed_rounds, 3);
    let log = cluster.control_as(&who("fedra://compliance/carol")).await?.audit(Default::default()).await?;
    let actions: Vec<_> = log.iter().map(|e| e.draft.action).collect();
    let applied = actions.iter().filter(|a| **a == AuditAction::PolicyApplied).count();
    assert_eq!(applied, 3, "start, tightening, loosening: {actions:?}");
    assert!(actions.contains(&AuditAction::RunBlockedByPolicy) && actions.contains(&AuditAction::RunResumed));

    // An invalid set is refused, audited, and the one in force stays.
    std::fs::write(dir.path().join("broken.toml"), "version = 1\n[[region]]\nname = \"x y\"\njurisdiction = \"EU\"\n")?;
    let e = admin.apply_policy().await.map_err(anyhow::Error::from).expect_err("refused");
    let (code, message) = rpc(&e);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("broken.toml:3:"), "{message}");
    let last = cluster.control_as(&who("fedra://compliance/carol")).await?.audit(Default::default()).await?;
    assert_eq!(last.last().map(|e| e.draft.action), Some(AuditAction::PolicyRefused));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_data_may_not_be_aggregated_here_are_never_selected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_policy(dir.path(), 100)?;
    // mars is in no rule: its raw updates may be aggregated nowhere.
    let specs =
        vec![blob_client(0, "eu", 4, 2, 100), blob_client(1, "us", 4, 2, 100), blob_client(2, "mars", 4, 2, 100)];
    let cluster = Cluster::builder().policy(dir.path(), "eu").clients(specs).start().await?;
    let mut control = cluster.control().await?;
    // Three wanted, two needed: without the filter all three would be selected at once.
    let mut p = plan(4, 2, 2, 3, 2);
    p.round_deadline_seconds = 2.0;
    let run = control.submit(&p).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, Duration::from_secs(60)).await?);
    for c in control.list_checkpoints(None, None, Some(&run)).await? {
        let manifest: fedra_coordinator::checkpoint::Manifest = serde_json::from_str(&c.manifest_json)?;
        let regions: Vec<String> = manifest.contributors.iter().map(|c| c.region.to_string()).collect();
        assert_eq!(regions.len(), 2, "{regions:?}");
        assert!(!regions.iter().any(|r| r == "mars"), "{regions:?}");
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_leaves_its_origin_only_on_the_origins_export_terms() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // US aggregates may leave the US only with at least 2 US contributors.
    write_policy_with(dir.path(), "", 2)?;
    let specs = vec![blob_client(0, "us", 4, 2, 100), blob_client(1, "eu", 4, 2, 100), blob_client(2, "eu", 4, 2, 100)];
    let cluster = Cluster::builder().policy(dir.path(), "eu").clients(specs).start().await?;
    let mut control = cluster.control().await?;
    // Admitted (3 clients per round ≥ 2), but the round has one US contributor, aggregated
    // in the EU: its aggregate would leave the US on too few contributors.
    let run = control.submit(&plan(4, 2, 1, 3, 3)).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_eq!(status.state, RunState::Failed);
    let failure = status.failure.unwrap_or_default();
    assert!(failure.contains("export refused"), "{failure}");
    assert!(failure.contains("policy.toml:18 (residency origin=US"), "{failure}");
    assert!(failure.contains("at least 2 contributors; this one has 1"), "{failure}");
    assert!(control.list_checkpoints(None, None, Some(&run)).await?.is_empty(), "nothing published");
    cluster.shutdown().await;
    Ok(())
}
