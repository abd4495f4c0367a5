//! Starting and stopping a coordinator: open the store, recover the engine, serve the three
//! gRPC services. Used by the binary, `fedra-sim` and the integration tests alike, so that
//! all of them run the same code.

use crate::aggregation::StagingPool;
use crate::audit;
use crate::checkpoint::Checkpoints;
use crate::config::{Config, Transport};
use crate::governance::{Governance, PolicyReloader};
use crate::grpc::readiness::{DeferredSlot, Readiness, Stage};
use crate::grpc::upstream::Upstream;
use crate::grpc::{CheckpointApi, FleetApi, Gate, GovernanceApi, PrivacyApi, RunApi, limits};
use crate::leadership::Leadership;
use crate::registry::Registry;
use crate::round::EngineSettings;
use crate::round::{Engine, EngineHandle, RoundError};
use crate::store::{OpenStore, Store, StoreError};
use fedra_proto::pb::checkpoint_service_server::CheckpointServiceServer;
use fedra_proto::pb::fleet_service_server::FleetServiceServer;
use fedra_proto::pb::governance_service_server::GovernanceServiceServer;
use fedra_proto::pb::privacy_service_server::PrivacyServiceServer;
use fedra_proto::pb::run_service_server::RunServiceServer;
use fedra_types::audit::AuditAction;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tracing::info;

/// The coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] fedra_pki::PkiError),
    #[error(transparent)]
    Policy(#[from] crate::governance::GovernanceError),
    #[error("checkpoint signing key: {0}")]
    SigningKey(String),
    /// The configuration contradicts what only start-up can see (the policy set's regions).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Artifacts(#[from] crate::checkpoint::CheckpointError),
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    engine: EngineHandle,
    engine_task: JoinHandle<()>,
    /// The model registry's task; it writes only between awaits of one transaction, which
    /// an abort rolls back.
    registry_task: JoinHandle<()>,
    server_task: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: Option<oneshot::Sender<()>>,
    store: OpenStore,
    tls: bool,
    reloader: PolicyReloader,
    /// A regional aggregator's session with its global coordinator, and its stop switch.
    upstream: Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>,
    /// The store's lease, held while this coordinator runs (`None` once given up).
    leadership: Option<Leadership>,
    /// What health checks report, and whether the API answers.
    readiness: Readiness,
    /// The uploads in flight, which a graceful stop lets finish.
    staging: StagingPool,
    /// The fleet API for sidecars in this process (simulations).
    inproc: crate::inproc::InProcFleet,
    /// The read-only dashboard and `/metrics` (`[web]`), if configured.
    web: Option<crate::web::WebServer>,
    /// The ops port (`metrics_listen`), if configured.
    ops: Option<(SocketAddr, JoinHandle<()>)>,
}

/// Per-stream HTTP/2 receive window of the coordinator's server.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
/// Per-connection HTTP/2 receive window (a sidecar has one upload or download at a time).
const HTTP2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// TLS handshakes in progress at once; more connections wait in the listen backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// HTTP/2 ping interval, and how long an unanswered ping keeps a connection.
const HTTP2_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
/// Streams one connection may hold open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// A coordinator that listens but does not lead yet: health says NOT_SERVING and the API
/// answers UNAVAILABLE (standing by, then recovering) until [`Starting::lead`] returns.
pub struct Starting {
    config: Config,
    /// The ops port (`metrics_listen`), answering from the start.
    ops: Option<(SocketAddr, JoinHandle<()>)>,
    addr: SocketAddr,
    server_task: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: oneshot::Sender<()>,
    readiness: Readiness,
    slots: Slots,
    gate: Gate,
    governance: Governance,
    checkpoints: Checkpoints,
}

/// The API services' slots, filled once the engine runs.
struct Slots {
    run: DeferredSlot<RunServiceServer<RunApi>>,
    fleet: DeferredSlot<FleetServiceServer<FleetApi>>,
    privacy: DeferredSlot<PrivacyServiceServer<PrivacyApi>>,
    governance: DeferredSlot<GovernanceServiceServer<GovernanceApi>>,
    checkpoint: DeferredSlot<CheckpointServiceServer<CheckpointApi>>,
}

/// How long a stopping coordinator lets uploads in flight finish before it stops the
/// engine (under Kubernetes' default 30 s termination grace period).
const UPLOAD_DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

impl Coordinator {
    /// Listens on `config.listen`, opens the configured store, waits for the lease,
    /// recovers unfinished runs and serves ([`Self::bind`] then [`Starting::lead`]).
    ///
    /// # Errors
    /// Directory, store, recovery or bind failures.
    pub async fn start(config: &Config) -> Result<Self, LaunchError> {
        Self::bind(config).await?.lead().await
    }

    /// Checks the TLS files, the policy set, the artifact stores and the signing key, then
    /// listens on `config.listen` with gRPC health (NOT_SERVING) and reflection answering
    /// and every API service refusing with UNAVAILABLE until [`Starting::lead`] is done.
    ///
    /// # Errors
    /// Directory, TLS, policy, artifact, signing-key or bind failures.
    pub async fn bind(config: &Config) -> Result<Starting, LaunchError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| LaunchError::Dir { path: config.data_dir.display().to_string(), source })?;
        // TLS files are checked before anything else starts, so a bad path fails fast.
        let tls = match &config.transport {
            Transport::Mutual { identity, crl, handshake_timeout, max_connections_per_identity } => Some((
                fedra_pki::ServerTls::load(identity, crl.as_deref())?,
                fedra_pki::AcceptLimits {
                    handshake_timeout: *handshake_timeout,
                    max_handshakes: MAX_PENDING_HANDSHAKES,
                    max_connections_per_identity: *max_connections_per_identity,
                },
            )),
            Transport::Insecure => None,
        };
        let gate = match &tls {
            Some((server, _)) => Gate::mutual(server.revocations()),
            None => Gate::insecure(),
        };
        // The policy set is checked before the store opens, so an invalid set fails fast.
        let governance = match &config.policy {
            Some(policy) => Governance::load(policy.clone())?,
            None => Governance::disabled(),
        };
        // A region's artifact store must be one of the policy set's regions.
        if let Some(snapshot) = governance.snapshot() {
            let declared = snapshot.set.regions().iter().map(|r| r.name.to_string()).collect::<Vec<_>>().join(", ");
            config.artifacts.check_regions(|r| snapshot.set.jurisdiction(r).is_some(), &declared)?;
        }
        let artifacts = Arc::new(config.artifacts.open()?);
        // Every manifest is signed; a provisioned key that is missing fails the start.
        let signer = Arc::new(config.signing_key.load().map_err(|e| LaunchError::SigningKey(e.to_string()))?);
        info!(key_id = signer.key_id(), "checkpoint manifests are signed");
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let (readiness, health) = Readiness::new(vec![
            <RunServiceServer<RunApi> as NamedService>::NAME,
            <FleetServiceServer<FleetApi> as NamedService>::NAME,
            <PrivacyServiceServer<PrivacyApi> as NamedService>::NAME,
            <GovernanceServiceServer<GovernanceApi> as NamedService>::NAME,
            <CheckpointServiceServer<CheckpointApi> as NamedService>::NAME,
        ])
        .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fedra_proto::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| LaunchError::Round(RoundError::Internal(format!("gRPC reflection: {e}"))))?;
        let (run, run_slot) = readiness.defer();
        let (fleet, fleet_slot) = readiness.defer();
        let (privacy, privacy_slot) = readiness.defer();
        let (governance_api, governance_slot) = readiness.defer();
        let (checkpoint, checkpoint_slot) = readiness.defer();
        let slots = Slots {
            run: run_slot,
            fleet: fleet_slot,
            privacy: privacy_slot,
            governance: governance_slot,
            checkpoint: checkpoint_slot,
        };
        let ops = match config.metrics_listen {
            None => None,
            Some(at) => {
                let r = readiness.clone();
                let ready: fedra_telemetry::ReadyCheck = Arc::new(move || r.ready());
                let served = fedra_telemetry::serve_ops(at, Some(ready), std::future::pending()).await;
                Some(served.map_err(|e| {
                    LaunchError::Config(crate::config::ConfigError::Invalid {
                        key: "metrics_listen".into(),
                        message: e.to_string(),
                    })
                })?)
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        // HTTP/2 flow-control windows bound what each connection can buffer before the
        // handlers read it: with hyper's 1 MiB defaults, 1000 uploading clients could park
        // 1 GiB in the coordinator. 64 KiB per stream (h2's own default) still fills loopback links.
        let router = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
            // Windows grow with the measured bandwidth-delay product of connections that
            // actually stream, so large transfers are not throttled by the small start.
            .http2_adaptive_window(Some(true))
            // Dead peers are noticed by HTTP/2 pings, not only by heartbeats.
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE))
            // A sidecar uses a handful of streams (subscription, heartbeat, one transfer); a
            // CLI a few. This bounds what one connection can open at once.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(health)
            .add_service(reflection)
            .add_service(run)
            .add_service(fleet)
            .add_service(privacy)
            .add_service(governance_api)
            .add_service(checkpoint);
        let shutdown = async {
            let _ = stopped.await;
        };
        let server_task = match tls {
            Some((server, limits)) => {
                let incoming = server.incoming(listener, limits);
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
        };
        info!(%addr, data_dir = %config.data_dir.display(), artifacts = %config.artifacts.default.describe(), "coordinator listening (not serving until it leads)");
        Ok(Starting {
            config: config.clone(),
            ops,
            addr,
            server_task,
            stop,
            readiness,
            slots,
            gate,
            governance,
            checkpoints: Checkpoints::new(artifacts, signer),
        })
    }

    /// Resolves with the reason once another coordinator has taken the lease over (this one
    /// stalled past its expiry) or the lease ran out unrenewed: the store refuses this
    /// process's writes from then on, so the process should stop ([`Self::shutdown`]).
    /// Never resolves while this coordinator leads.
    pub fn deposed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let deposed = self.leadership.as_ref().map(Leadership::deposed);
        async move {
            match deposed {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        }
    }

    /// The participants online now and the clients behind them (a global coordinator's
    /// regional aggregators and their inventories; a coordinator's own clients).
    ///
    /// # Errors
    /// The engine stopped.
    pub async fn inventory(&self) -> Result<crate::hierarchy::Inventory, RoundError> {
        self.engine.inventory().await
    }

    /// The fleet API for sidecars running in this process: the same engine, staging pool
    /// and checks as the gRPC `FleetService`, with buffers handed over instead of streamed
    /// (see [`crate::inproc`]). Simulations and tests only; deployments use gRPC.
    pub fn in_process_fleet(&self) -> crate::inproc::InProcFleet {
        self.inproc.clone()
    }

    /// Reloads the policy set on demand (SIGHUP, tests).
    pub fn governance(&self) -> PolicyReloader {
        self.reloader.clone()
    }

    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the dashboard listens on, when `[web]` is configured.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(crate::web::WebServer::addr)
    }

    /// `https://addr` (or `http://addr` with `--insecure`), for clients.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Stops gracefully: health says NOT_SERVING at once, no new work is handed out, uploads
    /// in flight get [`UPLOAD_DRAIN`] to finish, then the engine stops where it is (open round
    /// attempts are recorded as interrupted and re-run after restart), the server stops and
    /// the store closes.
    pub async fn shutdown(mut self) {
        self.readiness.set(Stage::Stopping).await;
        self.engine.drain().await;
        let in_flight = self.staging.in_use();
        if in_flight > 0 {
            info!(uploads = in_flight, grace_seconds = UPLOAD_DRAIN.as_secs(), "letting uploads in flight finish");
            if tokio::time::timeout(UPLOAD_DRAIN, self.staging.idle()).await.is_err() {
                tracing::warn!(
                    uploads = self.staging.in_use(),
                    "uploads still in flight after the grace period are cut off"
                );
            }
        }
        if let Some((stop, task)) = self.upstream.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(web) = self.web.take() {
            web.stop().await;
        }
        self.engine.shutdown().await;
        let _ = (&mut self.engine_task).await;
        self.registry_task.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams held open by clients (task subscriptions) would delay a graceful stop.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server_task).await;
        self.server_task.abort();
        // A standby takes over at once rather than when the lease would have run out.
        if let Some(leadership) = self.leadership.take() {
            leadership.release().await;
        }
        self.store.close().await;
        if let Some((_, ops)) = self.ops.take() {
            ops.abort();
        }
        info!("coordinator stopped");
    }

    /// Stops abruptly, as a crash would: no engine drain, no graceful stream end.
    pub async fn kill(mut self) {
        if let Some((_, ops)) = self.ops.take() {
            ops.abort();
        }
        if let Some(web) = self.web.take() {
            web.abort();
        }
        if let Some(web) = self.web.take() {
            web.abort();
        }
        if let Some((_, task)) = self.upstream.take() {
            task.abort();
            let _ = task.await;
        }
        self.engine_task.abort();
        self.server_task.abort();
        self.registry_task.abort();
        let _ = (&mut self.engine_task).await;
        let _ = (&mut self.server_task).await;
        self.stop.take();
        // A crash leaves its lease to run out.
        if let Some(leadership) = self.leadership.take() {
            leadership.abandon();
        }
        self.store.close().await;
    }
}

impl Starting {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ops port's address (`metrics_listen`), if configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(|(a, _)| *a)
    }

    /// Opens the store, waits for its lease (standing by while another coordinator leads),
    /// recovers unfinished runs, then serves the API and says SERVING.
    ///
    /// # Errors
    /// Store, lease or recovery failures; the listener is closed then.
    pub async fn lead(self) -> Result<Coordinator, LaunchError> {
        let Starting { config, ops, addr, mut server_task, stop, readiness, slots, gate, governance, checkpoints } =
            self;
        match lead(&config, &readiness, slots, gate, governance, checkpoints).await {
            Ok(led) => {
                readiness.set(Stage::Serving).await;
                info!(%addr, "coordinator serving");
                Ok(Coordinator {
                    addr,
                    engine: led.engine,
                    engine_task: led.engine_task,
                    server_task,
                    registry_task: led.registry_task,
                    stop: Some(stop),
                    store: led.store,
                    tls: config.transport != Transport::Insecure,
                    reloader: led.reloader,
                    upstream: led.upstream,
                    leadership: Some(led.leadership),
                    readiness,
                    staging: led.staging,
                    inproc: led.inproc,
                    web: led.web,
                    ops,
                })
            }
            Err(e) => {
                if let Some((_, ops)) = ops {
                    ops.abort();
                }
                let _ = stop.send(());
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut server_task).await;
                server_task.abort();
                Err(e)
            }
        }
    }
}

/// What [`Starting::lead`] starts.
struct Led {
    engine: EngineHandle,
    engine_task: JoinHandle<()>,
    registry_task: JoinHandle<()>,
    store: OpenStore,
    reloader: PolicyReloader,
    upstream: Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>,
    leadership: Leadership,
    staging: StagingPool,
    inproc: crate::inproc::InProcFleet,
    web: Option<crate::web::WebServer>,
}

async fn lead(
    config: &Config,
    readiness: &Readiness,
    slots: Slots,
    gate: Gate,
    governance: Governance,
    checkpoints: Checkpoints,
) -> Result<Led, LaunchError> {
    let opened = OpenStore::open(&config.store).await?;
    info!(store = %config.store, "store opened");
    let store: Arc<dyn Store> = opened.shared();
    // Nothing is written before this process leads: a standby waits here.
    let leadership = Leadership::acquire(Arc::clone(&store), &config.lease).await?;
    readiness.set(Stage::Recovering).await;
    if let Some(snapshot) = governance.snapshot() {
        info!(policy_sha256 = snapshot.sha256(), location = %snapshot.location, "policy set in force");
        audit::record(
            store.as_ref(),
            audit::draft(
                "coordinator (start)",
                AuditAction::PolicyApplied,
                format!("policy set {} in force at location {}", snapshot.sha256(), snapshot.location),
            ),
        )
        .await?;
    }
    let scratch_dir = config.data_dir.join("scratch");
    std::fs::create_dir_all(&scratch_dir)
        .map_err(|source| LaunchError::Dir { path: scratch_dir.display().to_string(), source })?;
    let settings = EngineSettings { governance: governance.clone(), scratch_dir, ..config.engine.clone() };
    for (region, spec) in &config.artifacts.regions {
        info!(%region, store = %spec.describe(), "region's checkpoints go to their own store");
    }
    let (engine, engine_task) = Engine::start(Arc::clone(&store), checkpoints.clone(), settings.clone()).await?;
    let (registry, registry_task) = Registry::start(Arc::clone(&store), &engine, governance.clone())
        .await
        .map_err(|e| LaunchError::Round(RoundError::Internal(format!("model registry: {e}"))))?;
    let staging = StagingPool::new(config.max_concurrent_uploads, config.staging_budget_bytes);
    let reloader = PolicyReloader::new(governance.clone(), Arc::clone(&store), engine.clone());
    // ---- web dashboard (crate::web): off unless [web] listen is set ----
    let web = match &config.web {
        None => None,
        Some(web) => {
            let sources = crate::web::Sources {
                store: Arc::clone(&store),
                engine: engine.clone(),
                governance: governance.clone(),
                budgets: config.engine.privacy.budgets.clone(),
                readiness: readiness.clone(),
            };
            let server = crate::web::WebServer::start(web, sources).await;
            Some(server.map_err(|source| LaunchError::Bind { addr: web.listen, source })?)
        }
    };
    // ---- end web dashboard ----
    // Each service accepts messages only as large as its RPCs need (grpc::limits).
    slots.run.fill(
        RunServiceServer::new(RunApi::new(engine.clone(), Arc::clone(&store), governance.clone(), gate.clone()))
            .max_decoding_message_size(limits::RUN_MAX_MESSAGE_BYTES),
    );
    slots.fleet.fill(
        FleetServiceServer::new(FleetApi::new(
            engine.clone(),
            staging.clone(),
            config.max_concurrent_downloads,
            config.engine.clone(),
            gate.clone(),
        ))
        .max_decoding_message_size(limits::FLEET_MAX_MESSAGE_BYTES),
    );
    slots.privacy.fill(
        PrivacyServiceServer::new(PrivacyApi::new(
            Arc::clone(&store),
            config.engine.privacy.budgets.clone(),
            governance.clone(),
            gate.clone(),
        ))
        .max_decoding_message_size(limits::READ_MAX_MESSAGE_BYTES),
    );
    slots.governance.fill(
        GovernanceServiceServer::new(GovernanceApi::new(
            engine.clone(),
            Arc::clone(&store),
            reloader.clone(),
            gate.clone(),
        ))
        .max_decoding_message_size(limits::READ_MAX_MESSAGE_BYTES),
    );
    slots.checkpoint.fill(
        CheckpointServiceServer::new(CheckpointApi::new(
            Arc::clone(&store),
            checkpoints.clone(),
            config.engine.chunk_bytes,
            governance,
            gate,
            registry,
        ))
        .max_decoding_message_size(limits::READ_MAX_MESSAGE_BYTES),
    );
    let upstream = match (&config.upstream, &config.engine.tier) {
        (Some(up), crate::hierarchy::Tier::Regional { location }) => {
            let (stop_up, stopped_up) = tokio::sync::watch::channel(false);
            let session = Upstream::new(up.clone(), location.clone(), engine.clone(), Arc::clone(&store), checkpoints);
            info!(upstream = %up.url, %location, "regional aggregator: serving cohorts of the global coordinator");
            Some((stop_up, tokio::spawn(session.run(stopped_up))))
        }
        _ => None,
    };
    let inproc = crate::inproc::InProcFleet::new(engine.clone(), staging.clone(), config.engine.clone());
    Ok(Led { engine, engine_task, registry_task, store: opened, reloader, upstream, leadership, staging, inproc, web })
}
