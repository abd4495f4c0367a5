//! Identity over real mutual TLS: who may reach which RPC, and what a certificate cannot be
//! used to claim. Every call goes through the coordinator's rustls server with the sim CA.

use crate::sandbox::*;
use fedra_coordinator::grpc::auth::{Access, Rpc, access};
use fedra_pki::ClientTls;
use fedra_pki::provision::{self, CaDir, IssueRequest};
use fedra_proto::pb;
use fedra_proto::pb::checkpoint_service_client::CheckpointServiceClient;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use fedra_proto::pb::governance_service_client::GovernanceServiceClient;
use fedra_proto::pb::privacy_service_client::PrivacyServiceClient;
use fedra_proto::pb::run_service_client::RunServiceClient;
use fedra_types::identity::{Identity, Role};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// Calls `rpc` once with a minimal request; the answer's status (or OK).
async fn call(channel: &Channel, rpc: Rpc) -> Result<(), tonic::Status> {
    let mut runs = RunServiceClient::new(channel.clone());
    let mut fleet = FleetServiceClient::new(channel.clone());
    let mut checkpoints = CheckpointServiceClient::new(channel.clone());
    let run_id = || "run-000000000000".to_string();
    match rpc {
        Rpc::SubmitRun => runs.submit_run(pb::SubmitRunRequest { plan: None }).await.map(drop),
        Rpc::GetRun => runs.get_run(pb::GetRunRequest { run_id: run_id() }).await.map(drop),
        Rpc::ListRuns => runs.list_runs(pb::ListRunsRequest::default()).await.map(drop),
        Rpc::WatchRun => runs.watch_run(pb::WatchRunRequest { run_id: run_id() }).await.map(drop),
        Rpc::CancelRun => runs.cancel_run(pb::CancelRunRequest { run_id: run_id() }).await.map(drop),
        Rpc::Register => fleet.register(pb::RegisterRequest::default()).await.map(drop),
        Rpc::Subscribe => fleet.subscribe(pb::SubscribeRequest::default()).await.map(drop),
        Rpc::Heartbeat => fleet.heartbeat(pb::HeartbeatRequest::default()).await.map(drop),
        Rpc::FetchModel => fleet.fetch_model(pb::FetchModelRequest::default()).await.map(drop),
        Rpc::PushUpdate => fleet.push_update(tokio_stream::iter(Vec::<pb::UpdatePart>::new())).await.map(drop),
        Rpc::ReserveUpload => fleet.reserve_upload(pb::ReserveUploadRequest::default()).await.map(drop),
        Rpc::ReportEvaluation => fleet.report_evaluation(pb::EvaluationReport::default()).await.map(drop),
        Rpc::PrivacyStatus => {
            PrivacyServiceClient::new(channel.clone()).status(pb::PrivacyStatusRequest::default()).await.map(drop)
        }
        Rpc::ListCheckpoints => CheckpointServiceClient::new(channel.clone())
            .list_checkpoints(pb::ListCheckpointsRequest::default())
            .await
            .map(drop),
        Rpc::FetchCheckpoint => CheckpointServiceClient::new(channel.clone())
            .fetch_checkpoint(pb::FetchCheckpointRequest {
                checkpoint_id: "run-000000000000.r0001".into(),
                region: String::new(),
            })
            .await
            .map(drop),
        Rpc::ApproveRun => GovernanceServiceClient::new(channel.clone())
            .approve_run(pb::ApproveRunRequest { run_id: run_id() })
            .await
            .map(drop),
        Rpc::RejectRun => GovernanceServiceClient::new(channel.clone())
            .reject_run(pb::RejectRunRequest { run_id: run_id(), reason: "no".into() })
            .await
            .map(drop),
        Rpc::ApplyPolicy => {
            GovernanceServiceClient::new(channel.clone()).apply_policy(pb::ApplyPolicyRequest {}).await.map(drop)
        }
        Rpc::ListAudit => {
            GovernanceServiceClient::new(channel.clone()).list_audit(pb::ListAuditRequest::default()).await.map(drop)
        }
        Rpc::ListModels => checkpoints.list_models(pb::ListModelsRequest::default()).await.map(drop),
        Rpc::ModelHistory => checkpoints.model_history(pb::ModelHistoryRequest::default()).await.map(drop),
        Rpc::WatchServing => checkpoints
            .watch_serving(pb::WatchServingRequest { region: "eu".into(), model_name: "m".into() })
            .await
            .map(drop),
        Rpc::PromoteModel => checkpoints
            .promote_model(pb::PromoteModelRequest {
                region: "eu".into(),
                model_name: "m".into(),
                checkpoint_id: "run-000000000000.r0001".into(),
                to: pb::ModelState::Serving as i32,
                reason: "r".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RollbackModel => checkpoints
            .rollback_model(pb::RollbackModelRequest {
                region: "eu".into(),
                model_name: "m".into(),
                reason: "r".into(),
            })
            .await
            .map(drop),
        Rpc::ReportServing => checkpoints
            .report_serving(pb::ServingReport { region: "eu".into(), model_name: "m".into(), ..Default::default() })
            .await
            .map(drop),
    }
}

fn identity(role: Role) -> Identity {
    let region = role.is_regional().then(|| fedra_types::ids::RegionId::new("eu").unwrap());
    Identity::new(role, region, &format!("{role}-1")).unwrap()
}

/// A channel whose handshake the server must refuse: every call fails without reaching a
/// handler (UNAVAILABLE, UNKNOWN or CANCELLED from the transport, never a handler's answer).
async fn assert_refused_everywhere(cluster: &Cluster, tls: &ClientTls, what: &str) {
    let endpoint = tls.endpoint(&cluster.endpoint()).unwrap().connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect_lazy();
    for rpc in Rpc::ALL {
        let e = call(&channel, rpc).await.expect_err(what);
        assert!(
            matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Unauthenticated | Code::Cancelled),
            "{what}: {rpc:?} answered {:?}: {}",
            e.code(),
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reaches_exactly_the_rpcs_the_table_allows() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    for role in Role::ALL {
        let channel = cluster.connect_as(&cluster.pki().tls(&identity(role))?).await?;
        for rpc in Rpc::ALL {
            let answer = call(&channel, rpc).await;
            let denied = matches!(&answer, Err(e) if e.code() == Code::PermissionDenied
                && e.message().starts_with(&format!("role {role} may not call")));
            assert_eq!(denied, access(role, rpc) == Access::Denied, "{role} × {rpc:?}: {answer:?}");
            if let Err(e) = &answer {
                assert_ne!(e.code(), Code::Unauthenticated, "{role} × {rpc:?}: {}", e.message());
            }
        }
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_foreign_expired_and_revoked_certificates_are_refused() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let ca_pem = std::fs::read_to_string(cluster.pki().ca().cert())?;
    let admin = identity(Role::Admin);

    // No certificate: the CA is trusted, but nothing is presented.
    let none = ClientTls::Mutual(
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)),
    );
    assert_refused_everywhere(&cluster, &none, "no client certificate").await;

    // A certificate from another CA, naming a perfectly valid identity.
    let tmp = tempfile::tempdir()?;
    let other = CaDir::new(tmp.path().join("other-ca"));
    provision::init_ca(&other, "other", time::Duration::days(1))?;
    let req = IssueRequest::holder(admin.clone(), time::Duration::days(1));
    let foreign = provision::issue_pem(&other, &req)?;
    // The client trusts our CA (so the server's certificate checks out); only its own is foreign.
    let foreign = ClientTls::from_pem(&ca_pem, &foreign.cert_pem, &foreign.key_pem);
    assert_refused_everywhere(&cluster, &foreign, "a certificate of another CA").await;

    // Expired an hour ago.
    let (expired, _) = cluster.pki().issue(&admin, time::Duration::hours(-1))?;
    assert_refused_everywhere(&cluster, &expired, "an expired certificate").await;

    // Revoked: a connection opened before the revocation is refused from its next request on,
    // and a new one fails its handshake.
    let (tls, serial) = cluster.pki().issue(&admin, time::Duration::days(1))?;
    let channel = cluster.connect_as(&tls).await?;
    call(&channel, Rpc::ListRuns).await?;
    cluster.pki().revoke(&serial)?;
    let e = call(&channel, Rpc::ListRuns).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains(&format!("(serial {serial}) has been revoked")), "{}", e.message());
    assert_refused_everywhere(&cluster, &tls, "a revoked certificate").await;
    // Other holders are unaffected.
    call(&cluster.connect_as(&cluster.pki().tls(&admin)?).await?, Rpc::ListRuns).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_cannot_claim_another_region_client_or_run() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let datasets = vec![pb::DatasetDescriptor { name: "d".into(), samples: 10, features: 4, classes: 3 }];

    // Certified for us-east, claiming eu-west: refused, and nothing is registered.
    let mut us = cluster.fleet_as("h1", "us-east").await?;
    let e = us
        .register(pb::RegisterRequest {
            members: 1,
            session_id: String::new(),
            client_id: "h1".into(),
            region: "eu-west".into(),
            datasets: datasets.clone(),
            capabilities: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "region \"eu-west\" is not the caller's region: the certificate says fedra://client/us-east/h1"
    );
    // Claiming another client's id.
    let e = us
        .register(pb::RegisterRequest {
            members: 1,
            session_id: String::new(),
            client_id: "h2".into(),
            region: String::new(),
            datasets: datasets.clone(),
            capabilities: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let store = open_store(&cluster).await?;
    use fedra_coordinator::store::Store;
    assert!(store.list_clients().await?.is_empty(), "refused registrations store nothing");
    // Empty fields are filled from the certificate.
    us.register(pb::RegisterRequest {
        members: 1,
        session_id: String::new(),
        client_id: String::new(),
        region: String::new(),
        datasets,
        capabilities: None,
    })
    .await?;
    let clients = store.list_clients().await?;
    assert_eq!((clients[0].id.as_str(), clients[0].region.as_str()), ("h1", "us-east"));

    // A scientist cannot cancel another scientist's run; its owner and an admin can.
    let mut alice = cluster.control_as(&"fedra://scientist/alice".parse()?).await?;
    let mut bob = cluster.control_as(&"fedra://scientist/bob".parse()?).await?;
    let run = alice.submit(&plan(4, 3, 1, 1, 1)).await?;
    let e = bob.cancel(&run).await.unwrap_err();
    assert!(
        matches!(&e, fedra_cli::control::ControlError::Rpc { code: Code::PermissionDenied, message }
            if message.contains("was not submitted by fedra://scientist/bob")),
        "{e}"
    );
    assert!(bob.list().await?.is_empty(), "bob sees only his own runs");
    assert_eq!(alice.list().await?.len(), 1);
    assert!(bob.get(&run).await.is_err());
    alice.cancel(&run).await?;
    let run = alice.submit(&plan(4, 3, 1, 1, 1)).await?;
    cluster.control().await?.cancel(&run).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_nodes_read_only_their_regions_checkpoints() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..2).map(|i| blob_client(i, "eu", 4, 3, 40)).collect();
    let cluster = Cluster::builder().clients(specs).start().await?;
    let mut p = plan(4, 3, 1, 2, 2);
    p.regions = vec!["eu".into()];
    let run = cluster.control_as(&"fedra://scientist/alice".parse()?).await?.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    let checkpoint = status.published_checkpoint.expect("published");

    let mut eu = cluster.control_as(&"fedra://inference/eu/node-1".parse()?).await?;
    let listed = eu.list_checkpoints(None, None, None).await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let dir = tempfile::tempdir()?;
    eu.pull_checkpoint(&checkpoint, dir.path()).await?;

    let mut us = cluster.control_as(&"fedra://inference/us/node-1".parse()?).await?;
    assert!(us.list_checkpoints(None, None, None).await?.is_empty(), "us sees none of eu's checkpoints");
    let denied = |e: fedra_cli::control::ControlError| match e {
        fedra_cli::control::ControlError::Rpc { code, message } => (code, message),
        other => panic!("expected a refusal, got {other}"),
    };
    let (code, message) = denied(us.list_checkpoints(Some("eu"), None, None).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied, "{message}");
    let (code, message) = denied(us.pull_checkpoint(&checkpoint, dir.path()).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(message, format!("checkpoint {checkpoint} was not published to region us"));
    // Inference nodes see no runs and no privacy ledger at all.
    assert!(us.list().await.is_err());
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_config_disagrees_with_its_certificate_gives_up_with_the_reason() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    // Certified as a client of us-east, configured for eu-west.
    let (tls, _) = cluster.pki().issue(&"fedra://client/us-east/h9".parse()?, time::Duration::days(1))?;
    let settings = fedra_client::session::SidecarSettings {
        endpoints: vec![cluster.endpoint()],
        tls,
        client_id: "h9".into(),
        region: "eu-west".into(),
        devices: vec!["cpu".into()],
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    };
    let info = fedra_client::data::DatasetInfo { name: "d".into(), samples: 10, features: 4, classes: 3 };
    let trainer = ScriptedTrainer::new(1, 15, 10);
    let sidecar = fedra_client::session::Sidecar::new(settings, vec![info], Box::new(trainer));
    let status = sidecar.status();
    let outcome = tokio::time::timeout(Duration::from_secs(30), sidecar.run(std::future::pending())).await?;
    let e = outcome.expect_err("the sidecar must give up");
    assert!(
        e.to_string().contains("is not the caller's region: the certificate says fedra://client/us-east/h9"),
        "{e}"
    );
    assert_eq!(status.borrow().last_error.as_deref(), Some(e.to_string().as_str()));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_open_more_connections_than_its_limit() -> anyhow::Result<()> {
    let cluster = Cluster::builder().max_connections_per_identity(2).start().await?;
    let scientist = cluster.pki().tls(&"fedra://scientist/alice".parse()?)?;
    // Two connections, each proven open by an answered call, held for the whole test.
    let mut held = Vec::new();
    for _ in 0..2 {
        let channel = cluster.connect_as(&scientist).await?;
        call(&channel, Rpc::ListRuns).await?;
        held.push(channel);
    }
    // The third completes its handshake and is closed by the coordinator: no RPC gets through.
    let third = scientist.endpoint(&cluster.endpoint())?.connect_timeout(Duration::from_secs(5)).connect_lazy();
    let e = call(&third, Rpc::ListRuns).await.expect_err("a third connection of the same identity is refused");
    assert!(matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{:?}: {}", e.code(), e.message());
    // Another identity is counted apart, and the held connections keep working.
    let bob = cluster.connect_as(&cluster.pki().tls(&"fedra://scientist/bob".parse()?)?).await?;
    call(&bob, Rpc::ListRuns).await?;
    for channel in &held {
        call(channel, Rpc::ListRuns).await?;
    }
    cluster.shutdown().await;
    Ok(())
}
