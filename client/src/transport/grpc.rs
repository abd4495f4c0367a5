//! The production carrier: the coordinator's `FleetService` over HTTP/2 (mutual TLS, or
//! plain text against an `--insecure` coordinator). The model comes down and the update
//! goes up as 256 KiB (by default) chunks with a transfer digest, so that a broken or
//! tampered transfer is noticed at the other end.
//!
//! Never a half-finished update: the upload stream is built from a complete update and its
//! trailer (sample count, metrics, digest) is the last message, so a crash or a broken
//! connection mid-upload leaves the coordinator with a stream that has no trailer, which it
//! discards.

use super::{FleetConnector, FleetLink, LinkSettings, ModelValues, Registration, TaskStream, Upload, UploadBody};
use crate::convert;
use crate::session::SessionError;
use crate::task::Task;
use crate::trainer::EvalOutcome;
use fedra_proto::chunking::{Reassembler, chunks, transfer_digest_hex};
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Connects to a coordinator's gRPC port with the sidecar's TLS setup.
pub struct GrpcConnector {
    pub tls: fedra_pki::ClientTls,
}

#[async_trait::async_trait]
impl FleetConnector for GrpcConnector {
    async fn connect(&self, endpoint: &str) -> Result<Arc<dyn FleetLink>, SessionError> {
        let err = |message: String| SessionError::Connect { endpoint: endpoint.to_string(), message };
        let channel = self
            .tls
            .endpoint(endpoint)
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(GrpcLink { fleet: FleetServiceClient::new(channel) }))
    }
}

/// One gRPC connection to a coordinator (cheap to clone per call: the channel is shared).
#[derive(Clone)]
pub struct GrpcLink {
    fleet: FleetServiceClient<Channel>,
}

impl GrpcLink {
    /// A link over an existing connection (tests that connect by hand).
    pub fn new(fleet: FleetServiceClient<Channel>) -> Self {
        Self { fleet }
    }
}

#[async_trait::async_trait]
impl FleetLink for GrpcLink {
    async fn register(&self, r: &Registration) -> Result<LinkSettings, SessionError> {
        let req = convert::register_to_pb(&r.client_id, &r.region, &r.datasets, &r.devices, &r.session_id);
        let settings = self.fleet.clone().register(req).await?.into_inner();
        Ok(LinkSettings { heartbeat_interval_seconds: settings.heartbeat_interval_seconds })
    }

    async fn subscribe(&self, client_id: &str) -> Result<TaskStream, SessionError> {
        let req = pb::SubscribeRequest { client_id: client_id.to_string() };
        let tasks = self.fleet.clone().subscribe(req).await?.into_inner();
        Ok(tasks
            .map(|t| match t {
                Ok(t) => convert::task_from_pb(t).map_err(SessionError::Wire),
                Err(status) => Err(status.into()),
            })
            .boxed())
    }

    async fn heartbeat(&self, client_id: &str) -> Result<Vec<String>, SessionError> {
        let req = pb::HeartbeatRequest { client_id: client_id.to_string(), task_id: String::new() };
        Ok(self.fleet.clone().heartbeat(req).await?.into_inner().cancelled_tasks)
    }

    async fn fetch_model(&self, task: &Task, client_id: &str) -> Result<ModelValues, SessionError> {
        fetch_model(&mut self.fleet.clone(), task, client_id).await.map(Arc::new)
    }

    async fn push_update(&self, upload: Upload) -> Result<u32, SessionError> {
        let Upload { task_id, client_id, total_values, is_delta, samples, body, chunk_bytes, trailer, cut_off_after } =
            upload;
        let mut fleet = self.fleet.clone();
        if trailer.is_some() {
            reserve_upload(&mut fleet, &task_id, &client_id, total_values).await?;
        }
        let header = pb::UpdatePart {
            part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
                task_id,
                client_id,
                total_values: total_values as u64,
                is_delta,
                // Announced so that a plain round's coordinator folds the chunks as they arrive.
                samples,
            })),
        };
        let chunk_part = |c: pb::ParamChunk| pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) };
        let complete = trailer.is_some();
        let (chunk_parts, digest): (Vec<pb::UpdatePart>, String) = match body {
            // Cut off: the first values only, and the stream ends after the last chunk sent.
            UploadBody::Dense(values) => {
                let sent = if complete { values.len() } else { cut_off_after.min(values.len()) };
                let digest = if complete { transfer_digest_hex(&values) } else { String::new() };
                (chunks(&values[..sent], chunk_bytes).map(chunk_part).collect(), digest)
            }
            // The digest covers the bytes that go on the wire. A cut-off encoded upload comes
            // already truncated to whole chunks by the session.
            UploadBody::Encoded { chunks: encoded, .. } => {
                let digest = if complete { fedra_proto::compressed::wire_digest_hex(&encoded) } else { String::new() };
                (encoded.into_iter().map(chunk_part).collect(), digest)
            }
        };
        let trailer = trailer.map(|t| pb::UpdatePart {
            part: Some(pb::update_part::Part::Trailer(pb::UpdateTrailer {
                samples: t.samples,
                metrics: Some(convert::metrics_to_pb(&t.metrics)),
                update_norm: t.update_norm,
                digest,
                contributors: 1,
                scopes: vec![],
                reference: t.reference.as_ref().map(fedra_proto::drift_wire::reference_to_pb),
            })),
        });
        // The trailer is produced only after every chunk has been sent.
        let parts: Vec<pb::UpdatePart> = std::iter::once(header).chain(chunk_parts).chain(trailer).collect();
        if complete {
            count_upload(&parts);
        }
        Ok(fleet.push_update(tokio_stream::iter(parts)).await?.into_inner().reported)
    }

    async fn report_evaluation(
        &self,
        task_id: &str,
        client_id: &str,
        outcome: Option<EvalOutcome>,
    ) -> Result<(), SessionError> {
        self.fleet.clone().report_evaluation(convert::evaluation_report_to_pb(task_id, client_id, outcome)).await?;
        Ok(())
    }
}

/// Waits until the coordinator holds a staging slot for this update (`ReserveUpload`), so
/// that its bytes are sent only once they can be consumed: while a client waits here it
/// parks nothing in the coordinator's HTTP/2 windows. A coordinator without the RPC answers
/// UNIMPLEMENTED, and the push then waits for its slot on the coordinator as before. A
/// cut-off upload (fault injection) does not reserve: it pushes as a crashing client would.
async fn reserve_upload(
    fleet: &mut FleetServiceClient<Channel>,
    task: &str,
    client: &str,
    total_values: usize,
) -> Result<(), SessionError> {
    let request =
        pb::ReserveUploadRequest { task_id: task.into(), client_id: client.into(), total_values: total_values as u64 };
    match fleet.reserve_upload(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(()),
        Err(status) => Err(status.into()),
    }
}

/// Downloads and verifies the task's global model.
///
/// # Errors
/// Transport failures, a stream that breaks the chunk contract or a digest mismatch.
pub async fn fetch_model(
    fleet: &mut FleetServiceClient<Channel>,
    task: &Task,
    client_id: &str,
) -> Result<Vec<f32>, SessionError> {
    let mut stream = fleet
        .fetch_model(pb::FetchModelRequest { task_id: task.id.clone(), client_id: client_id.to_string() })
        .await?
        .into_inner();
    let header = match stream.message().await? {
        Some(pb::ModelPart { part: Some(pb::model_part::Part::Header(h)) }) => h,
        _ => return Err(SessionError::Protocol("model stream did not start with a header".into())),
    };
    super::check_model_length(header.total_values as usize, task)?;
    let mut r = Reassembler::new(header.total_values);
    while let Some(part) = stream.message().await? {
        match part.part {
            Some(pb::model_part::Part::Chunk(c)) => {
                metrics::counter!("fedra_client_download_bytes_total").increment(c.data.len() as u64);
                r.push(&c)?;
            }
            _ => return Err(SessionError::Protocol("unexpected message in model stream".into())),
        }
    }
    Ok(r.finish(&header.digest)?)
}

/// Counts an upload's encoded bytes (header, chunks and trailer) in the sidecar's metrics.
fn count_upload(parts: &[pb::UpdatePart]) {
    let bytes: usize = parts.iter().map(prost::Message::encoded_len).sum();
    metrics::counter!("fedra_client_upload_bytes_total").increment(bytes as u64);
}
