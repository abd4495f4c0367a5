//! Serving before leading: the coordinator listens from the moment it starts, so that
//! probes and clients get an answer while it stands by (another coordinator holds the
//! store's lease) or recovers (the engine reconciles unfinished rounds). Until then its API
//! services are [`Deferred`]: every call gets UNAVAILABLE naming why, which a sidecar treats
//! like an unreachable coordinator and moves on to the next endpoint. The standard health
//! service (`grpc.health.v1`) says NOT_SERVING over the same span ([`Readiness`]).

use futures::future::BoxFuture;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use tonic::server::NamedService;

/// Why the API does not answer yet, or that it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the store's lease: another coordinator leads.
    StandingBy,
    /// Leading; recovering unfinished runs before serving.
    Recovering,
    Serving,
    /// Shutting down: no new work is taken.
    Stopping,
}

impl Stage {
    fn refusal(self) -> &'static str {
        match self {
            Self::StandingBy => "this coordinator is standing by: another coordinator holds the store's lease",
            Self::Recovering => "this coordinator is recovering unfinished runs; try again shortly",
            Self::Serving => "the service is not wired (a coordinator bug)",
            Self::Stopping => "this coordinator is shutting down",
        }
    }
}

/// The coordinator's stage, shared by its deferred services and its health reporter.
#[derive(Clone)]
pub struct Readiness {
    stage: Arc<RwLock<Stage>>,
    health: tonic_health::server::HealthReporter,
    services: Arc<Vec<&'static str>>,
}

impl Readiness {
    /// A readiness for `services` (their gRPC names), standing by; also returns the health
    /// service to serve beside them.
    pub async fn new(
        services: Vec<&'static str>,
    ) -> (Self, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) {
        let (health, server) = tonic_health::server::health_reporter();
        let readiness = Self { stage: Arc::new(RwLock::new(Stage::StandingBy)), health, services: Arc::new(services) };
        readiness.publish(Stage::StandingBy).await;
        (readiness, server)
    }

    /// `Ok` while serving, else why not (the ops port's `/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        match self.stage() {
            Stage::Serving => Ok(()),
            stage => Err(stage.refusal().to_string()),
        }
    }

    pub fn stage(&self) -> Stage {
        *self.stage.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves to `stage`; health says SERVING exactly in [`Stage::Serving`], for the whole
    /// server (`""`) and each API service.
    pub async fn set(&self, stage: Stage) {
        *self.stage.write().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
        self.publish(stage).await;
        tracing::info!(stage = ?stage, "coordinator readiness");
    }

    async fn publish(&self, stage: Stage) {
        let status = if stage == Stage::Serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for name in std::iter::once("").chain(self.services.iter().copied()) {
            self.health.set_service_status(name, status).await;
        }
        metrics::gauge!("fedra_coordinator_serving").set(if stage == Stage::Serving { 1.0 } else { 0.0 });
    }

    /// A service that answers UNAVAILABLE until [`DeferredSlot::fill`] gives it `S`.
    pub fn defer<S>(&self) -> (Deferred<S>, DeferredSlot<S>) {
        let slot = Arc::new(OnceLock::new());
        (Deferred { slot: Arc::clone(&slot), readiness: self.clone() }, DeferredSlot { slot })
    }
}

/// Fills a [`Deferred`] service once the coordinator can serve it.
pub struct DeferredSlot<S> {
    slot: Arc<OnceLock<S>>,
}

impl<S> DeferredSlot<S> {
    pub fn fill(self, service: S) {
        // Filled once, by the one start-up path that owns this slot.
        let _ = self.slot.set(service);
    }
}

/// A gRPC service that exists from the start and answers once it is filled (module doc).
pub struct Deferred<S> {
    slot: Arc<OnceLock<S>>,
    readiness: Readiness,
}

impl<S> Clone for Deferred<S> {
    fn clone(&self) -> Self {
        Self { slot: Arc::clone(&self.slot), readiness: self.readiness.clone() }
    }
}

impl<S: NamedService> NamedService for Deferred<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for Deferred<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's generated services are always ready; readiness is checked per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let stage = self.readiness.stage();
        match self.slot.get() {
            Some(service) if stage == Stage::Serving || stage == Stage::Stopping => {
                let mut service = service.clone();
                Box::pin(async move { service.call(req).await })
            }
            _ => {
                let status = tonic::Status::unavailable(stage.refusal());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
