//! `InferenceService` as the node serves it: batched predictions from the serving
//! checkpoint or, for the configured share of requests, the canary.

use super::node::NodeState;
use fedra_proto::pb;
use fedra_proto::pb::inference_service_server::InferenceService;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// The most rows one request may carry.
pub const MAX_ROWS: usize = 4096;

pub struct InferenceApi {
    state: Arc<NodeState>,
}

impl InferenceApi {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

/// A request's place in [0, 1): from its routing key (sticky: the same key always lands on
/// the same arm) or at random.
fn route(key: &str) -> f64 {
    if key.is_empty() {
        return rand::random::<f64>();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// CPU time this thread has used. Measured around each prediction on its blocking thread,
/// so concurrent requests do not count each other's work.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID is supported
    // on every Linux this runs on; on failure the call leaves `ts` zeroed.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[tonic::async_trait]
impl InferenceService for InferenceApi {
    async fn predict(&self, req: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let r = req.into_inner();
        let now = self.state.serving();
        let Some(serving) = now.serving.clone() else {
            return Err(Status::unavailable("no verified serving checkpoint is loaded yet"));
        };
        let features = r.features as usize;
        if features != serving.input_dim {
            return Err(Status::invalid_argument(format!(
                "features: the model takes {} values per row, got {}",
                serving.input_dim, r.features
            )));
        }
        if r.inputs.is_empty() || !r.inputs.len().is_multiple_of(features) {
            return Err(Status::invalid_argument(format!(
                "inputs: {} values are not whole rows of {features}",
                r.inputs.len()
            )));
        }
        let rows = r.inputs.len() / features;
        if rows > MAX_ROWS {
            return Err(Status::invalid_argument(format!("inputs: at most {MAX_ROWS} rows, got {rows}")));
        }
        if r.inputs.iter().any(|v| !v.is_finite()) {
            return Err(Status::invalid_argument("inputs: every value must be finite"));
        }
        let (model, canary) = match &now.canary {
            Some((c, fraction)) if route(&r.routing_key) < *fraction => (Arc::clone(c), true),
            _ => (serving.clone(), false),
        };
        let inputs = r.inputs;
        let job = Arc::clone(&model);
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let cpu = thread_cpu();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.predict(&inputs, rows)));
            (result, thread_cpu().saturating_sub(cpu), inputs)
        })
        .await;
        let latency = started.elapsed();
        let (result, cpu, inputs) = outcome.map_err(|e| Status::internal(format!("prediction task: {e}")))?;
        let mut stats = self.state.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((predictions, probabilities)) => {
                stats.record(&model.checkpoint, canary, rows, latency, cpu, true);
                stats.observe(&serving.checkpoint, features, serving.classes, &inputs, &predictions);
                drop(stats);
                Ok(Response::new(pb::PredictResponse {
                    classes: model.classes as u32,
                    predictions,
                    probabilities,
                    checkpoint_id: model.checkpoint.clone(),
                    canary,
                }))
            }
            Err(_) => {
                stats.record(&model.checkpoint, canary, rows, latency, cpu, false);
                Err(Status::internal(format!("checkpoint {} failed to predict", model.checkpoint)))
            }
        }
    }

    async fn stats(&self, _req: Request<pb::NodeStatsRequest>) -> Result<Response<pb::ServingReport>, Status> {
        Ok(Response::new(fedra_proto::serving_wire::report_to_pb(&self.state.report())))
    }
}
