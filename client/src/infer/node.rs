//! The node's state and its two background tasks: the watcher, which follows what serves
//! in its region (`WatchServing`), downloads and verifies each new checkpoint and swaps it
//! in; and the reporter, which sends the live statistics to the coordinator.

use super::model::LoadedModel;
use super::stats::{DriftSettings, NodeStats};
use burn::tensor::Device;
use fedra_pki::checkpoint::{Bundle, verify_bundle};
use fedra_pki::signing::TrustedKeys;
use fedra_proto::pb;
use fedra_proto::pb::checkpoint_service_client::CheckpointServiceClient;
use fedra_types::serving::ServingReport;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{error, info, warn};

/// What the node serves now. Replaced whole on a change; requests hold the `Arc` they
/// started with, so a swap never fails one in flight.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    pub serving: Option<Arc<LoadedModel>>,
    /// The canary and its share of requests.
    pub canary: Option<(Arc<LoadedModel>, f64)>,
}

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub region: String,
    pub model: String,
    /// Reported as the node's name on an `--insecure` coordinator (a certificate's name
    /// otherwise).
    pub name: String,
    pub price_per_cpu_hour: f64,
    pub drift: DriftSettings,
    pub report_interval: Duration,
}

/// Refusals kept for `Stats`.
const KEPT_REFUSALS: usize = 8;

/// State shared by the service and the tasks.
pub struct NodeState {
    pub settings: NodeSettings,
    slot: RwLock<Arc<Serving>>,
    pub(super) stats: Mutex<NodeStats>,
    refused: Mutex<VecDeque<String>>,
    /// The (serving, canary) checkpoint ids loaded, for whoever waits on a swap.
    loaded: watch::Sender<(Option<String>, Option<String>)>,
    /// How many checkpoints were refused so far, for whoever waits on a refusal.
    refusal_count: watch::Sender<usize>,
}

impl NodeState {
    pub fn new(settings: NodeSettings) -> Self {
        Self {
            settings,
            slot: RwLock::default(),
            stats: Mutex::default(),
            refused: Mutex::default(),
            loaded: watch::channel((None, None)).0,
            refusal_count: watch::channel(0).0,
        }
    }

    /// What serves now.
    pub fn serving(&self) -> Arc<Serving> {
        Arc::clone(&self.slot.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Follows swaps: (serving, canary) checkpoint ids.
    pub fn loaded(&self) -> watch::Receiver<(Option<String>, Option<String>)> {
        self.loaded.subscribe()
    }

    /// Follows refusals: how many checkpoints were refused so far.
    pub fn refusal_count(&self) -> watch::Receiver<usize> {
        self.refusal_count.subscribe()
    }

    /// Checkpoints the node refused to load, with why (latest first).
    pub fn refusals(&self) -> Vec<String> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    fn refuse(&self, why: String) {
        error!(%why, "checkpoint refused; the node keeps serving what it had");
        let mut r = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.push_front(why);
        r.truncate(KEPT_REFUSALS);
        drop(r);
        self.refusal_count.send_modify(|n| *n += 1);
    }

    fn swap(&self, next: Serving) {
        let ids = (
            next.serving.as_ref().map(|m| m.checkpoint.clone()),
            next.canary.as_ref().map(|(m, _)| m.checkpoint.clone()),
        );
        {
            let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let live: Vec<&str> = ids.0.iter().chain(ids.1.iter()).map(String::as_str).collect();
            stats.retain_arms(&live);
            if let Some(s) = &ids.0 {
                stats.arm(s, false);
            }
            if let Some(c) = &ids.1 {
                stats.arm(c, true);
            }
        }
        *self.slot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        info!(serving = ?ids.0, canary = ?ids.1, "now serving");
        self.loaded.send_replace(ids);
    }

    /// The node's report: both arms and the drift of live inputs against the serving
    /// checkpoint's reference.
    pub fn report(&self) -> ServingReport {
        let serving = self.serving();
        let stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let drift = serving
            .serving
            .as_ref()
            .and_then(|m| stats.drift(&m.checkpoint, m.reference.as_ref(), self.settings.drift));
        ServingReport {
            node: self.settings.name.clone(),
            region: self.settings.region.clone(),
            model: self.settings.model.clone(),
            arms: stats.arms(self.settings.price_per_cpu_hour),
            drift,
            refused: self.refusals(),
        }
    }
}

/// Downloads the region's copy of `id` and verifies it: signature, digests, and the
/// drift reference against the signed manifest.
async fn fetch_verified(
    client: &mut CheckpointServiceClient<Channel>,
    region: &str,
    id: &str,
    trust: &TrustedKeys,
    device: &Device,
) -> Result<LoadedModel, String> {
    let req = pb::FetchCheckpointRequest { checkpoint_id: id.to_string(), region: region.to_string() };
    let mut stream =
        client.fetch_checkpoint(req).await.map_err(|s| format!("fetching {id}: {}", s.message()))?.into_inner();
    let Some(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Info(info)) }) =
        stream.message().await.map_err(|s| format!("fetching {id}: {}", s.message()))?
    else {
        return Err(format!("fetching {id}: the stream did not start with its info"));
    };
    let mut weights = Vec::new();
    while let Some(part) = stream.message().await.map_err(|s| format!("fetching {id}: {}", s.message()))? {
        match part.part {
            Some(pb::checkpoint_part::Part::Safetensors(b)) => weights.extend_from_slice(&b),
            _ => return Err(format!("fetching {id}: unexpected message")),
        }
    }
    let bundle =
        Bundle { manifest: info.manifest_json.into_bytes(), signature: info.signature_json.into_bytes(), weights };
    let view = verify_bundle(id, &bundle, trust).map_err(|e| e.to_string())?;
    // This region's reference must be the one the signed manifest names for it.
    match view.reference_sha256.get(region) {
        Some(want) => {
            let got = hex::encode(Sha256::digest(info.reference_json.as_bytes()));
            if !got.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "checkpoint {id}: drift reference sha256 {got} differs from the manifest's {want}"
                ));
            }
        }
        None if !info.reference_json.is_empty() => {
            return Err(format!("checkpoint {id}: a drift reference its manifest does not name for {region}"));
        }
        None => {}
    }
    let (view, reference, device) = (view, info.reference_json, device.clone());
    tokio::task::spawn_blocking(move || LoadedModel::load(&view, &bundle.weights, &reference, &device))
        .await
        .map_err(|e| format!("loading {id}: {e}"))?
}

/// One entry of a serving set, loaded: the one already loaded when the id is unchanged.
async fn resolve(
    state: &NodeState,
    client: &mut CheckpointServiceClient<Channel>,
    trust: &TrustedKeys,
    device: &Device,
    wanted: Option<&pb::RegistryEntry>,
    current: &Serving,
) -> Result<Option<Arc<LoadedModel>>, String> {
    let Some(entry) = wanted else { return Ok(None) };
    let have = [current.serving.as_ref(), current.canary.as_ref().map(|(m, _)| m)];
    if let Some(m) = have.into_iter().flatten().find(|m| m.checkpoint == entry.checkpoint_id) {
        return Ok(Some(Arc::clone(m)));
    }
    fetch_verified(client, &state.settings.region, &entry.checkpoint_id, trust, device).await.map(|m| Some(Arc::new(m)))
}

/// Applies one serving set. A checkpoint that fails verification is refused and the node
/// keeps the one it served in that role.
async fn apply(
    state: &NodeState,
    client: &mut CheckpointServiceClient<Channel>,
    trust: &TrustedKeys,
    device: &Device,
    set: &pb::ServingSet,
) {
    let current = state.serving();
    let serving = match resolve(state, client, trust, device, set.serving.as_ref(), &current).await {
        Ok(m) => m,
        Err(why) => {
            state.refuse(why);
            current.serving.clone()
        }
    };
    let canary = match resolve(state, client, trust, device, set.canary.as_ref(), &current).await {
        Ok(m) => m.map(|m| (m, set.canary.as_ref().map_or(0.0, |c| c.canary_fraction))),
        Err(why) => {
            state.refuse(why);
            None
        }
    };
    state.swap(Serving { serving, canary });
}

/// Follows `WatchServing` for the node's region and model until `stop`, reconnecting
/// after a lost stream.
pub async fn watch_serving(
    state: Arc<NodeState>,
    channel: Channel,
    trust: TrustedKeys,
    device: Device,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = CheckpointServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut backoff = Duration::from_millis(200);
    while !*stop.borrow() {
        let req =
            pb::WatchServingRequest { region: state.settings.region.clone(), model_name: state.settings.model.clone() };
        match client.watch_serving(req).await {
            Ok(stream) => {
                backoff = Duration::from_millis(200);
                let mut stream = stream.into_inner();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        next = stream.message() => match next {
                            Ok(Some(set)) => apply(&state, &mut client, &trust, &device, &set).await,
                            Ok(None) => break,
                            Err(s) => {
                                warn!(error = %s.message(), "serving watch ended; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
            Err(s) => warn!(error = %s.message(), "cannot watch what serves; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Sends the node's report every `report_interval` until `stop`.
pub async fn report_loop(state: Arc<NodeState>, channel: Channel, mut stop: watch::Receiver<bool>) {
    let mut client = CheckpointServiceClient::new(channel);
    let mut tick = tokio::time::interval(state.settings.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let report = fedra_proto::serving_wire::report_to_pb(&state.report());
        match client.report_serving(report).await {
            Ok(r) if !r.get_ref().action.is_empty() => info!(action = %r.get_ref().action, "the canary rule acted"),
            Ok(_) => {}
            Err(s) => warn!(error = %s.message(), "cannot report to the coordinator"),
        }
    }
}
