//! Starting and stopping a coordinator: open the store, recover the engine, serve the three
//! gRPC services. Used by the binary, `fedra-sim` and the integration tests alike, so that
//! all of them run the same code.

use crate::aggregation::StagingPool;
use crate::checkpoint::CheckpointDir;
use crate::config::Config;
use crate::grpc::{CheckpointApi, FleetApi, PrivacyApi, RunApi};
use crate::round::{Engine, EngineHandle, RoundError};
use crate::store::{SqliteStore, Store, StoreError};
use fedra_proto::pb::checkpoint_service_server::CheckpointServiceServer;
use fedra_proto::pb::fleet_service_server::FleetServiceServer;
use fedra_proto::pb::privacy_service_server::PrivacyServiceServer;
use fedra_proto::pb::run_service_server::RunServiceServer;
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
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    engine: EngineHandle,
    engine_task: JoinHandle<()>,
    server_task: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: Option<oneshot::Sender<()>>,
    store: SqliteStore,
}

/// Per-stream HTTP/2 receive window of the coordinator's server.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
/// Per-connection HTTP/2 receive window (a sidecar has one upload or download at a time).
const HTTP2_CONNECTION_WINDOW: u32 = 512 * 1024;

impl Coordinator {
    /// Opens `<data_dir>/fedra.db`, recovers unfinished runs and starts serving on
    /// `config.listen`.
    ///
    /// # Errors
    /// Directory, store, recovery or bind failures.
    pub async fn start(config: &Config) -> Result<Self, LaunchError> {
        for dir in [&config.data_dir, &config.artifact_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|source| LaunchError::Dir { path: dir.display().to_string(), source })?;
        }
        let sqlite = SqliteStore::open(&config.data_dir.join("fedra.db")).await?;
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let (engine, engine_task) =
            Engine::start(Arc::clone(&store), CheckpointDir::new(&config.artifact_dir), config.engine.clone()).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| LaunchError::Bind { addr: config.listen, source })?;
        let staging = StagingPool::new(config.max_concurrent_uploads, config.staging_budget_bytes);
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
            .add_service(RunServiceServer::new(RunApi::new(engine.clone())))
            .add_service(FleetServiceServer::new(FleetApi::new(
                engine.clone(),
                staging,
                config.max_concurrent_downloads,
                config.engine.clone(),
            )))
            .add_service(PrivacyServiceServer::new(PrivacyApi::new(
                Arc::clone(&store),
                config.engine.privacy.budgets.clone(),
            )))
            .add_service(CheckpointServiceServer::new(CheckpointApi::new(store, config.engine.chunk_bytes)));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server_task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        info!(%addr, data_dir = %config.data_dir.display(), artifacts = %config.artifact_dir.display(), "coordinator listening");
        Ok(Self { addr, engine, engine_task, server_task, stop: Some(stop), store: sqlite })
    }

    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the engine where it is (an in-progress round is re-run after restart), stops
    /// serving and closes the store.
    pub async fn shutdown(mut self) {
        self.engine.shutdown().await;
        let _ = (&mut self.engine_task).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams held open by clients (task subscriptions) would delay a graceful stop.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server_task).await;
        self.server_task.abort();
        self.store.close().await;
        info!("coordinator stopped");
    }

    /// Stops abruptly, as a crash would: no engine drain, no graceful stream end.
    pub async fn kill(mut self) {
        self.engine_task.abort();
        self.server_task.abort();
        let _ = (&mut self.engine_task).await;
        let _ = (&mut self.server_task).await;
        self.stop.take();
        self.store.close().await;
    }
}
