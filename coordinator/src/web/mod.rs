//! The read-only web dashboard: what a data scientist, a compliance officer or an operator
//! would otherwise ask the CLI, on pages that update while runs progress. Runs and rounds
//! with their progress and cost, training and evaluation charts per region, privacy budgets
//! per scope, where each region's data may flow under the policy set, checkpoints per region
//! with their lifecycle and provenance, and the audit log with its verification; plus
//! Prometheus `/metrics` (`fedra_telemetry`), and `/healthz` and `/readyz` for probes.
//!
//! It changes nothing: every route is a `GET` that reads the store, the engine's run views
//! and the policy snapshot. It admits the same callers the API admits, checked against the
//! same role table ([`access`]); it is off unless `[web] listen` is set, and it listens on
//! loopback only (`crate::config::web`).
//!
//! Layering: this module is the only one that sees axum. [`runs`] and [`oversight`] build
//! plain views from domain reads; [`pages`] and [`charts`] render them as HTML and SVG;
//! [`routes`] converts requests and responses. No JavaScript library and nothing from a CDN:
//! one stylesheet and one small script of our own, compiled into the binary.

pub mod access;
pub mod charts;
pub mod oversight;
pub mod pages;
mod routes;
pub mod runs;

use crate::config::web::WebConfig;
use crate::governance::Governance;
use crate::privacy::Budgets;
use crate::round::EngineHandle;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What the dashboard reads.
#[derive(Clone)]
pub struct Sources {
    pub store: Arc<dyn Store>,
    /// Run views with their live phase (and the same disclosure rules as the API).
    pub engine: EngineHandle,
    pub governance: Governance,
    /// The config's budgets, for scopes when no policy set is in force.
    pub budgets: Budgets,
    /// Whether the coordinator serves (`/readyz`).
    pub readiness: crate::grpc::readiness::Readiness,
}

struct WebState {
    sources: Sources,
    doorman: access::Doorman,
    /// Becomes `true` when the dashboard stops; ends the event streams.
    stop: watch::Receiver<bool>,
}

type Shared = Arc<WebState>;

/// How long [`WebServer::stop`] lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running dashboard.
pub struct WebServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WebServer {
    /// Binds `config.listen` and serves the dashboard until [`Self::stop`].
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(config: &WebConfig, sources: Sources) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(WebState { sources, doorman: access::Doorman::new(config), stop: stopped.clone() });
        let app = routes::router(state);
        let mut signal = stopped;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = signal.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                warn!(error = %e, "dashboard server stopped");
            }
        });
        match &config.token {
            Some(_) => info!(%addr, role = %config.token_role, "dashboard listening (bearer token required)"),
            None => warn!(%addr, "dashboard listening WITHOUT a token (--insecure): every local user may read it"),
        }
        Ok(Self { addr, stop, task })
    }

    /// The address it listens on (the configured one, with the port chosen if that was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the event streams and lets requests in flight finish for a
    /// moment ([`STOP_GRACE`]) before closing what is left.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_GRACE, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }

    /// Stops at once, as a crash would.
    pub fn abort(self) {
        self.task.abort();
    }
}
