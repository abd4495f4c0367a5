//! `fedra-infer`: the regional inference node. It runs next to a region's applications,
//! follows what serves its model in its region (`CheckpointService.WatchServing`), loads
//! only checkpoints that verify against the deployment's trusted signing keys (signature,
//! digests, drift reference), and answers `InferenceService.Predict` from the serving
//! checkpoint or, for the canary's share of requests, the canary.
//!
//! Guarantees:
//! - A checkpoint that fails verification is never loaded: the node keeps serving what it
//!   had and lists the refusal in its report.
//! - A swap replaces the served models as one value; a request in flight finishes on the
//!   model it started with, so a promotion or rollback fails no request.
//! - Live statistics per arm (requests, errors, p50/p99 latency, CPU seconds and cost per
//!   1,000 predictions) and the drift of live inputs against the checkpoint's training
//!   reference go to the coordinator every report interval (`fedra drift status`), where
//!   the canary rule acts on them.

pub mod model;
pub mod node;
pub mod service;
pub mod stats;

use fedra_pki::ClientTls;
use fedra_pki::signing::TrustedKeys;
use fedra_proto::pb::inference_service_server::InferenceServiceServer;
use node::{NodeSettings, NodeState};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// burn's CPU device (what `--device cpu` opens).
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// A running node.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub state: Arc<NodeState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Starts a node serving on `listen` and following `coordinator`.
    ///
    /// # Errors
    /// An endpoint that does not parse or a port that cannot be bound.
    pub async fn start(
        coordinator: &str,
        tls: &ClientTls,
        trust: TrustedKeys,
        device: burn::tensor::Device,
        settings: NodeSettings,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let channel = tls.endpoint(coordinator)?.connect_lazy();
        let state = Arc::new(NodeState::new(settings));
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        // Replies go out at once: without TCP_NODELAY a batch's reply waits ~40 ms for the
        // peer's delayed ACK (Nagle), which is most of a 64-row prediction's latency.
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
            if let Ok(stream) = &s {
                let _ = stream.set_nodelay(true);
            }
            s
        });
        let mut shutdown = stopped.clone();
        let server = tonic::transport::Server::builder()
            .add_service(InferenceServiceServer::new(service::InferenceApi::new(Arc::clone(&state))))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.changed().await;
            });
        let tasks = vec![
            tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "inference server stopped");
                }
            }),
            tokio::spawn(node::watch_serving(Arc::clone(&state), channel.clone(), trust, device, stopped.clone())),
            tokio::spawn(node::report_loop(Arc::clone(&state), channel, stopped)),
        ];
        Ok(Self { addr, state, stop, tasks })
    }

    /// Stops serving and the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
