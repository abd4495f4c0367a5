//! Starting and stopping a coordinator: open the store, recover the engine, serve the three
//! gRPC services. Used by the binary, `fedra-sim` and the integration tests alike, so that
//! all of them run the same code.

use crate::aggregation::StagingPool;
use crate::audit;
use crate::checkpoint::Checkpoints;
use crate::config::{Config, Transport};
use crate::governance::{Governance, PolicyReloader};
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
    /// The read-only dashboard (`[web]`), if configured.
    web: Option<crate::web::WebServer>,
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

impl Coordinator {
    /// Opens the configured store (`config.store`), recovers unfinished runs and starts
    /// serving on `config.listen`.
    ///
    /// # Errors
    /// Directory, store, recovery or bind failures.
    pub async fn start(config: &Config) -> Result<Self, LaunchError> {
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
        let opened = OpenStore::open(&config.store).await?;
        info!(store = %config.store, "store opened");
        let store: Arc<dyn Store> = opened.shared();
        // Nothing is written before this process leads: a standby waits here.
        let leadership = Leadership::acquire(Arc::clone(&store), &config.lease).await?;
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
        let checkpoints = Checkpoints::new(artifacts, signer);
        let (engine, engine_task) = Engine::start(Arc::clone(&store), checkpoints.clone(), settings.clone()).await?;
        let (registry, registry_task) = Registry::start(Arc::clone(&store), &engine, governance.clone())
            .await
            .map_err(|e| LaunchError::Round(RoundError::Internal(format!("model registry: {e}"))))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let staging = StagingPool::new(config.max_concurrent_uploads, config.staging_budget_bytes);
        let (stop, stopped) = oneshot::channel::<()>();
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
                };
                let server = crate::web::WebServer::start(web, sources).await;
                Some(server.map_err(|source| LaunchError::Bind { addr: web.listen, source })?)
            }
        };
        // ---- end web dashboard ----
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
            // Each service accepts messages only as large as its RPCs need (grpc::limits).
            .add_service(
                RunServiceServer::new(RunApi::new(
                    engine.clone(),
                    Arc::clone(&store),
                    governance.clone(),
                    gate.clone(),
                ))
                .max_decoding_message_size(limits::RUN_MAX_MESSAGE_BYTES),
            )
            .add_service(
                FleetServiceServer::new(FleetApi::new(
                    engine.clone(),
                    staging,
                    config.max_concurrent_downloads,
                    config.engine.clone(),
                    gate.clone(),
                ))
                .max_decoding_message_size(limits::FLEET_MAX_MESSAGE_BYTES),
            )
            .add_service(
                PrivacyServiceServer::new(PrivacyApi::new(
                    Arc::clone(&store),
                    config.engine.privacy.budgets.clone(),
                    governance.clone(),
                    gate.clone(),
                ))
                .max_decoding_message_size(limits::READ_MAX_MESSAGE_BYTES),
            )
            .add_service(
                GovernanceServiceServer::new(GovernanceApi::new(
                    engine.clone(),
                    Arc::clone(&store),
                    reloader.clone(),
                    gate.clone(),
                ))
                .max_decoding_message_size(limits::READ_MAX_MESSAGE_BYTES),
            )
            .add_service(
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
        let upstream_store = store;
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
        info!(%addr, data_dir = %config.data_dir.display(), artifacts = %config.artifacts.default.describe(), "coordinator listening");
        let tls = config.transport != Transport::Insecure;
        let upstream = match (&config.upstream, &config.engine.tier) {
            (Some(up), crate::hierarchy::Tier::Regional { location }) => {
                let (stop_up, stopped_up) = tokio::sync::watch::channel(false);
                let session = Upstream::new(
                    up.clone(),
                    location.clone(),
                    engine.clone(),
                    Arc::clone(&upstream_store),
                    checkpoints,
                );
                info!(upstream = %up.url, %location, "regional aggregator: serving cohorts of the global coordinator");
                Some((stop_up, tokio::spawn(session.run(stopped_up))))
            }
            _ => None,
        };
        Ok(Self {
            addr,
            engine,
            engine_task,
            server_task,
            registry_task,
            stop: Some(stop),
            store: opened,
            tls,
            reloader,
            upstream,
            leadership: Some(leadership),
            web,
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

    /// Stops the engine where it is (an in-progress round is re-run after restart), stops
    /// serving and closes the store.
    pub async fn shutdown(mut self) {
        if let Some(web) = self.web.take() {
            web.stop().await;
        }
        if let Some((stop, task)) = self.upstream.take() {
            let _ = stop.send(true);
            let _ = task.await;
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
        info!("coordinator stopped");
    }

    /// Stops abruptly, as a crash would: no engine drain, no graceful stream end.
    pub async fn kill(mut self) {
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
