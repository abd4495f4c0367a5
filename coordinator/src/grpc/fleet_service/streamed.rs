//! A streamed upload (see [`crate::round::stream`]): each chunk is checked, appended to the
//! upload's spill file and folded by the run actor before the next is read, so the
//! coordinator holds no buffer of the update's size. However the upload ends short of a
//! counted update, what it folded is subtracted again before the caller hears about it.

use super::super::ApiError;
use super::{FleetApi, Received, next_chunk, verified};
use crate::ids::{ClientId, TaskId};
use crate::round::stream::{StreamSink, UploadSpill};
use crate::round::{RoundError, UpdateValues, UploadTicket};
use fedra_proto::compressed::UpdateDecoder;
use fedra_proto::pb;
use std::sync::Arc;
use tonic::Streaming;

/// Subtracts the upload's folded values if its handler is dropped mid-upload (the client
/// went away and the server dropped the call); disarmed once the outcome is settled.
struct RevertOnDrop<'a> {
    sink: &'a StreamSink,
    task: &'a TaskId,
    armed: bool,
}

impl Drop for RevertOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.sink.revert_later(self.task);
        }
    }
}

impl FleetApi {
    /// Receives an upload whose header announced its sample count, folding as it streams.
    pub(super) async fn receive_streamed(
        &self,
        mut stream: Streaming<pb::UpdatePart>,
        header: &pb::UpdateHeader,
        task: TaskId,
        client: ClientId,
        ticket: &UploadTicket,
        sink: StreamSink,
    ) -> Result<u32, ApiError> {
        let samples = crate::grpc::limits::samples("header.samples", header.samples, false)?;
        // Admission: a bounded number of uploads stream at once (their HTTP/2 windows are
        // what they can park here), reserved ahead by ReserveUpload or waited for now.
        let _slot = match self.reserved.take_stream(&task) {
            Some(slot) => slot,
            None => self.stream_slot(ticket).await?,
        };
        let spill = UploadSpill::create(sink.scratch_dir()).map_err(|e| {
            ApiError::Round(RoundError::Internal(format!("cannot create the upload's spill file: {e}")))
        })?;
        let spill = Arc::new(spill);
        let mut guard = RevertOnDrop { sink: &sink, task: &task, armed: true };
        let received = self.stream_chunks(&mut stream, header, &task, &client, ticket, &sink, samples, &spill).await;
        let outcome = match received {
            // The actor counts the update or, refusing it, subtracts it itself.
            Ok(update) => self.engine.commit_upload(task.clone(), client, update).await.map_err(ApiError::from),
            Err(e) => {
                let values = sink.revert(&task).await;
                Err(reverted(e, values))
            }
        };
        guard.armed = false;
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_chunks(
        &self,
        stream: &mut Streaming<pb::UpdatePart>,
        header: &pb::UpdateHeader,
        task: &TaskId,
        client: &ClientId,
        ticket: &UploadTicket,
        sink: &StreamSink,
        samples: u64,
        spill: &Arc<UploadSpill>,
    ) -> Result<crate::round::VerifiedUpdate, ApiError> {
        let total = ticket.total_values;
        let mut cursor = UpdateDecoder::new(crate::plan::Compression::None, total, &[])
            .map_err(|e| ApiError::Round(RoundError::Internal(e.to_string())))?;
        let idle = self.settings.client_timeout;
        let mut wire_bytes = 0u64;
        let trailer = loop {
            match next_chunk(stream, idle, ticket.deadline, cursor.received(), total).await? {
                Received::Chunk(c) => {
                    let range = cursor.accept_unstaged(&c)?;
                    wire_bytes += fedra_proto::compressed::encoded_len(&c) as u64;
                    // On file before it is folded: whatever is folded can be read back.
                    let (file, data) = (Arc::clone(spill), c.data.clone());
                    tokio::task::spawn_blocking(move || file.append(&data))
                        .await
                        .map_err(|e| RoundError::Internal(format!("the spill writer failed: {e}")))?
                        .map_err(|e| RoundError::Internal(format!("cannot spill the upload: {e}")))?;
                    sink.fold(task, client, range.start, c.data, samples, spill).await?;
                    crate::crash::point("mid_upload");
                }
                Received::Trailer(t) => break t,
            }
        };
        let computed = cursor.finish()?;
        verified(header, trailer, &computed, UpdateValues::Streamed { len: total }, wire_bytes)
    }
}

/// `e`, saying that the `values` the upload had folded were subtracted again.
fn reverted(e: ApiError, values: u64) -> ApiError {
    let note = |m: String| format!("{m} (the {values} values already folded were subtracted)");
    match e {
        _ if values == 0 => e,
        ApiError::Protocol(m) => ApiError::Protocol(note(m)),
        ApiError::Invalid(m) => ApiError::Invalid(note(m)),
        other => other,
    }
}
