//! The in-process carrier: `fedra-client`'s [`FleetLink`] over a coordinator running in
//! this process ([`fedra_coordinator::inproc`]), for simulations that do not need the wire.
//!
//! The sidecar's session loop and the coordinator's round engine are the production code;
//! only the carrier differs from gRPC. The global model comes down as another reference to
//! the coordinator's own buffer and the update goes up as the trainer's `Vec<f32>`, moved
//! into the coordinator's staging slot: no encoding, framing, digests or copies. The
//! coordinator's refusals arrive as the [`SessionError::Rpc`] gRPC would have produced
//! (same code, same message), so the session reacts to them alike.
//!
//! This is the only place that knows both the coordinator's and the client's vocabulary,
//! so it converts between them directly ([`task_from_assignment`]): no protobuf.

use fedra_client::session::SessionError;
use fedra_client::task::Task;
use fedra_client::trainer::{EvalOutcome, LocalHyperparams, Optimizer, TrainSpec};
use fedra_client::transport::{
    FleetConnector, FleetLink, LinkSettings, ModelValues, Registration, TaskStream, Upload, UploadBody,
};
use fedra_coordinator::grpc::ApiError;
use fedra_coordinator::inproc::{InProcClient, InProcFleet, InProcTrailer, InProcUpload};
use fedra_coordinator::round::{EvaluationReport, TaskAssignment};
use futures::StreamExt;
use std::sync::{Arc, RwLock};

/// How a simulation's sidecars reach their coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The production path: gRPC over loopback (mutual TLS in clusters).
    #[default]
    Grpc,
    /// The coordinator's fleet API called in process, with shared buffers.
    Inproc,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Inproc => "inproc",
        }
    }
}

/// The coordinator of this process that in-process sidecars reach now. A restarted
/// coordinator replaces it; sidecars of the old one see it stop (UNAVAILABLE) and
/// reconnect to the new one, as they would over gRPC.
#[derive(Clone, Default)]
pub struct Switchboard(Arc<RwLock<Option<InProcFleet>>>);

impl Switchboard {
    /// Sidecars connect to `fleet` from now on (`None`: the coordinator is down).
    pub fn set(&self, fleet: Option<InProcFleet>) {
        *self.0.write().expect("switchboard poisoned") = fleet;
    }

    /// A connector for the sidecar of client `id` in `region`.
    pub fn connector(&self, id: &str, region: &str) -> Arc<dyn FleetConnector> {
        Arc::new(InProcConnector { switchboard: self.clone(), id: id.to_string(), region: region.to_string() })
    }

    /// A link as client `id` of `region` to the coordinator that is up now.
    ///
    /// # Errors
    /// No coordinator is up, or the id or region is invalid.
    pub fn link(&self, id: &str, region: &str) -> Result<Arc<dyn FleetLink>, SessionError> {
        let fleet = self.0.read().expect("switchboard poisoned").clone().ok_or_else(|| SessionError::Connect {
            endpoint: "inproc".into(),
            message: "no coordinator is running in this process".into(),
        })?;
        Ok(Arc::new(InProcLink { client: fleet.client(id, region).map_err(refused)? }))
    }
}

/// Opens in-process links for one sidecar; the endpoint is ignored (there is one
/// coordinator in the process).
struct InProcConnector {
    switchboard: Switchboard,
    id: String,
    region: String,
}

#[async_trait::async_trait]
impl FleetConnector for InProcConnector {
    async fn connect(&self, _endpoint: &str) -> Result<Arc<dyn FleetLink>, SessionError> {
        self.switchboard.link(&self.id, &self.region)
    }
}

/// A coordinator refusal as the gRPC edge would have answered it.
fn refused(e: ApiError) -> SessionError {
    SessionError::Rpc { code: e.code(), message: e.to_string() }
}

struct InProcLink {
    client: InProcClient,
}

#[async_trait::async_trait]
impl FleetLink for InProcLink {
    async fn register(&self, r: &Registration) -> Result<LinkSettings, SessionError> {
        let datasets = r
            .datasets
            .iter()
            .map(|d| fedra_coordinator::store::DatasetDescriptor {
                name: d.name.clone(),
                samples: d.samples,
                features: d.features,
                classes: d.classes,
            })
            .collect();
        let every = self.client.register(datasets, r.devices.clone(), r.session_id.clone()).await.map_err(refused)?;
        Ok(LinkSettings { heartbeat_interval_seconds: every.as_secs_f64() })
    }

    async fn subscribe(&self, _client_id: &str) -> Result<TaskStream, SessionError> {
        let rx = self.client.subscribe().await.map_err(refused)?;
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).map(|a| Ok(task_from_assignment(*a))).boxed())
    }

    async fn heartbeat(&self, _client_id: &str) -> Result<Vec<String>, SessionError> {
        self.client.heartbeat().await.map_err(refused)
    }

    async fn fetch_model(&self, task: &Task, client_id: &str) -> Result<ModelValues, SessionError> {
        let model = self.client.fetch_model(&task.id, client_id).await.map_err(refused)?;
        Ok(model.params.shared())
    }

    async fn push_update(&self, upload: Upload) -> Result<u32, SessionError> {
        let Upload { task_id, client_id, total_values, is_delta, body, trailer, cut_off_after, .. } = upload;
        let complete = trailer.is_some();
        let (mut values, wire_bytes) = match body {
            UploadBody::Dense(values) => {
                let bytes = (values.len() * 4) as u64;
                (values, bytes)
            }
            UploadBody::Encoded { chunks, compression, global } => {
                tokio::task::spawn_blocking(move || decode(compression, total_values, &global, &chunks, complete))
                    .await
                    .map_err(|e| SessionError::Protocol(format!("decoding thread failed: {e}")))??
            }
        };
        if !complete {
            values.truncate(cut_off_after);
        }
        let upload = InProcUpload {
            task: task_id,
            client: client_id,
            total_values: total_values as u64,
            is_delta,
            values,
            trailer: trailer.map(|t| InProcTrailer {
                samples: t.samples,
                metrics: t.metrics,
                update_norm: t.update_norm,
                reference: t.reference,
            }),
            wire_bytes,
        };
        self.client.push_update(upload).await.map_err(refused)
    }

    async fn report_evaluation(
        &self,
        task_id: &str,
        client_id: &str,
        outcome: Option<EvalOutcome>,
    ) -> Result<(), SessionError> {
        // `None` (no held-out split) is a report of zero samples, as on the wire.
        let o = outcome.unwrap_or_default();
        let report = EvaluationReport { samples: o.samples, loss: o.loss, accuracy: o.accuracy, clients: 1 };
        self.client.report_evaluation(task_id, client_id, report).await.map_err(refused)
    }
}

/// A compressed update decoded to global + Δ with the codec the coordinator's gRPC edge
/// uses, so that the values staged are the same on both carriers; also returns the
/// encoded size. A decoding error is what the coordinator would have refused the upload
/// with.
fn decode(
    compression: fedra_types::plan::Compression,
    total: usize,
    global: &[f32],
    chunks: &[fedra_proto::pb::ParamChunk],
    complete: bool,
) -> Result<(Vec<f32>, u64), SessionError> {
    let codec = |e: fedra_proto::compressed::CodecError| refused(ApiError::from(e));
    let mut values = vec![0.0f32; total];
    let mut decoder = fedra_proto::compressed::UpdateDecoder::new(compression, total as u64, global).map_err(codec)?;
    let mut bytes = 0u64;
    for c in chunks {
        decoder.accept(c, &mut values).map_err(codec)?;
        bytes += fedra_proto::compressed::encoded_len(c) as u64;
    }
    if complete {
        decoder.finish().map_err(codec)?;
    }
    Ok((values, bytes))
}

/// The coordinator's task assignment as the sidecar's [`Task`]: what the gRPC path gets
/// from `task_to_pb` then `task_from_pb` (a test below holds the two paths together).
pub fn task_from_assignment(a: TaskAssignment) -> Task {
    let optimizer = match a.local.optimizer {
        fedra_types::plan::Optimizer::Sgd => Optimizer::Sgd { momentum: a.local.momentum },
        fedra_types::plan::Optimizer::Adam => Optimizer::Adam,
    };
    Task {
        id: a.task.into(),
        run: a.run.into(),
        round: a.round,
        spec: TrainSpec {
            architecture: a.model.architecture().clone(),
            layout: a.layout,
            hyper: LocalHyperparams {
                epochs: a.local.epochs,
                batch_size: a.local.batch_size,
                learning_rate: a.local.learning_rate,
                optimizer,
                proximal_mu: a.local.proximal_mu,
            },
            seed: a.seed,
        },
        chunk_bytes: a.chunk_bytes,
        deadline: a.deadline,
        kind: a.kind,
        privacy: a.privacy,
        compression: a.compression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedra_coordinator::ids::{RunId, TaskId};
    use fedra_types::model::{Architecture, ModelSpec};
    use fedra_types::plan::{Compression, LocalTraining};
    use fedra_types::task::{PrivacyTask, TaskKind};

    #[test]
    fn assignments_become_the_tasks_the_wire_would_deliver() {
        let arch = Architecture::Mlp { input_dim: 4, hidden: vec![3], classes: 2 };
        for (optimizer, privacy, compression) in [
            (fedra_types::plan::Optimizer::Sgd, None, Compression::TopK { fraction: 0.25 }),
            (
                fedra_types::plan::Optimizer::Adam,
                Some(PrivacyTask { clip_norm: 1.5, local_noise_std: 0.2, lattice_slack: 0.01 }),
                Compression::None,
            ),
        ] {
            let a = TaskAssignment {
                task: TaskId::new("run-1.r0002.c3").unwrap(),
                run: RunId::new("run-1").unwrap(),
                round: 2,
                model: ModelSpec::new("m", arch.clone()).unwrap(),
                layout: arch.layout(),
                local: LocalTraining {
                    epochs: 3,
                    batch_size: 8,
                    learning_rate: 0.05,
                    proximal_mu: 0.1,
                    optimizer,
                    momentum: 0.9,
                },
                deadline: std::time::Duration::from_millis(1500),
                chunk_bytes: 4096,
                seed: 77,
                kind: TaskKind::Train,
                privacy,
                cohort: None,
                compression,
            };
            let direct = task_from_assignment(a.clone());
            let wire = fedra_client::convert::task_from_pb(fedra_coordinator::grpc::convert::task_to_pb(a)).unwrap();
            assert_eq!(format!("{direct:?}"), format!("{wire:?}"));
        }
    }
}
