//! Streamed uploads on the run actor's side (see [`crate::round::stream`]): each chunk is
//! folded into the round's fixed-point sum as it arrives, the update is counted when its
//! commit checks out, and an upload that breaks, is refused or is still streaming when the
//! round closes is subtracted again, chunk by chunk, from its spill file.

use super::super::super::run::RunCore;
use super::super::super::stream::{StreamMsg, UploadSpill};
use super::super::Phase;
use super::Training;
use crate::aggregation::{AggregationError, FixedPointAccumulator, RangeFolder, RoundSum};
use crate::ids::{ClientId, TaskId};
use crate::round::RoundError;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bytes read back from a spill file at a time when an upload is subtracted.
const REVERT_PIECE: usize = 1 << 20;

/// One streamed upload open in the round.
#[derive(Debug)]
pub(in crate::round) struct OpenStream {
    spill: Arc<UploadSpill>,
    weight: f64,
    /// Values folded so far, from coordinate 0 (chunks arrive in order).
    folded: usize,
    /// A chunk of it is being folded on a blocking thread.
    in_flight: bool,
    /// The handler went away while a chunk was in flight: subtract the upload once that
    /// chunk is in (and answer the waiting handler, if any, with the values subtracted).
    revert_waiting: Option<Option<oneshot::Sender<u64>>>,
    /// Wall time and thread CPU its folds took (the round's fold time and cost).
    seconds: f64,
    cpu: f64,
}

/// Serves one upload handler's message. Returns true when the round's end must be checked
/// (a refused chunk may leave too few clients, a failed subtraction breaks the round, a
/// close may have waited for the fold that just came in).
///
/// A chunk is checked and booked here, then folded on a blocking thread through a
/// [`crate::aggregation::RangeFolder`]: uploads fold in parallel, on as many cores as
/// there are, while this actor only keeps the books. The thread reports back
/// ([`StreamMsg::Folded`]) whatever happens to the handler meanwhile.
pub(in crate::round) fn on_stream(phase: &mut Phase, core: &mut RunCore, msg: StreamMsg) -> bool {
    match msg {
        StreamMsg::Fold { task, client, offset, data, samples, spill, reply } => {
            let r = match phase {
                Phase::Training(t) => start_fold(t, core, &task, &client, offset, samples, spill),
                _ => Err(core.not_open(&task)),
            };
            match r {
                Ok(folder) => {
                    let sink = core.streams.clone();
                    tokio::task::spawn_blocking(move || {
                        let (started, cpu) = (Instant::now(), fedra_telemetry::thread_cpu_seconds());
                        let outcome = folder.fold_le_range(offset, &data);
                        let seconds = started.elapsed().as_secs_f64();
                        let cpu = (fedra_telemetry::thread_cpu_seconds() - cpu).max(0.0);
                        sink.folded(StreamMsg::Folded { task, values: data.len() / 4, outcome, seconds, cpu, reply });
                    });
                    false
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    true
                }
            }
        }
        StreamMsg::Folded { task, values, outcome, seconds, cpu, reply } => {
            let r = match phase {
                Phase::Training(t) => folded(t, &task, values, outcome, seconds, cpu),
                _ => Err(core.not_open(&task)),
            };
            let refused = r.is_err();
            let _ = reply.send(r);
            refused || matches!(phase, Phase::Training(t) if t.closing && !folding(t))
        }
        StreamMsg::Revert { task, reply } => {
            let Phase::Training(t) = phase else {
                if let Some(reply) = reply {
                    let _ = reply.send(0);
                }
                return false;
            };
            if let Some(stream) = t.streams.get_mut(&task)
                && stream.in_flight
            {
                stream.revert_waiting = Some(reply);
                return false;
            }
            let values = revert(t, &task);
            if let Some(reply) = reply {
                let _ = reply.send(values);
            }
            t.broken.is_some()
        }
    }
}

/// Whether a chunk is being folded on a blocking thread right now.
pub(super) fn folding(t: &Training) -> bool {
    t.streams.values().any(|s| s.in_flight)
}

/// Checks and books one chunk of `task`'s streamed upload; returns the folder that folds
/// it (the caller runs it off this thread).
#[allow(clippy::too_many_arguments)]
fn start_fold(
    t: &mut Training,
    core: &RunCore,
    task: &TaskId,
    client: &ClientId,
    offset: usize,
    samples: u64,
    spill: Arc<UploadSpill>,
) -> Result<RangeFolder, RoundError> {
    let a = super::open_assignment(t, core, task, client)?;
    if t.closing {
        // The round has what it needs; what this upload folded comes out at the close.
        return Err(core.not_open(task));
    }
    // The commit checks these too; refusing the first chunk saves folding the rest.
    if samples == 0 {
        return Err(RoundError::ZeroSamples);
    }
    if samples > a.registered_samples {
        return Err(RoundError::TooManySamples {
            client: client.clone(),
            claimed: samples,
            registered: a.registered_samples,
        });
    }
    let weight = samples as f64;
    let Some(RoundSum::Mean(acc)) = t.acc.as_ref() else {
        return Err(RoundError::Internal("this round does not fold uploads as they stream".into()));
    };
    let folder = acc.folder(weight)?;
    let stream = match t.streams.entry(task.clone()) {
        Entry::Occupied(o) => o.into_mut(),
        Entry::Vacant(v) if offset == 0 => v.insert(OpenStream {
            spill,
            weight,
            folded: 0,
            in_flight: false,
            revert_waiting: None,
            seconds: 0.0,
            cpu: 0.0,
        }),
        Entry::Vacant(_) => {
            return Err(RoundError::Internal(format!("a streamed upload's first chunk starts at {offset}, not 0")));
        }
    };
    // The handler's chunk cursor keeps chunks in order, one at a time, and the weight fixed;
    // checked again because a mismatch here would fold garbage.
    if stream.in_flight || stream.folded != offset || stream.weight != weight {
        let why = format!(
            "chunk at {offset} with {samples} samples does not follow {} values folded with weight {}{}",
            stream.folded,
            stream.weight,
            if stream.in_flight { " (another chunk is still folding)" } else { "" }
        );
        revert(t, task);
        return Err(RoundError::Internal(why));
    }
    stream.in_flight = true;
    Ok(folder)
}

/// Books a chunk folded on a blocking thread. A refused chunk left no trace (its fold
/// undid itself); then, as for an upload whose handler went away meanwhile, the chunks
/// before it come out too.
fn folded(
    t: &mut Training,
    task: &TaskId,
    values: usize,
    outcome: Result<(), AggregationError>,
    seconds: f64,
    cpu: f64,
) -> Result<(), RoundError> {
    let Some(stream) = t.streams.get_mut(task) else {
        return Err(RoundError::Internal("the streamed upload was closed while its chunk folded".into()));
    };
    stream.in_flight = false;
    stream.seconds += seconds;
    stream.cpu += cpu;
    if outcome.is_ok() {
        stream.folded += values;
    }
    let waiting = stream.revert_waiting.take();
    let result = match (outcome, &waiting) {
        (Ok(()), None) => return Ok(()),
        (Err(e), _) => Err(e.into()),
        (Ok(()), Some(_)) => Err(RoundError::Internal("the upload was abandoned while its chunk folded".into())),
    };
    let subtracted = revert(t, task);
    if let Some(Some(reply)) = waiting {
        let _ = reply.send(subtracted);
    }
    result
}

/// Counts `task`'s streamed update, every value of which is folded: its weight joins the
/// denominator and the stream closes. Returns the fold time and CPU its chunks took. On an
/// error the stream stays open, for the caller to subtract.
pub(super) fn count(t: &mut Training, task: &TaskId, weight: f64) -> (Result<(), RoundError>, Duration, f64) {
    let (Some(stream), Some(RoundSum::Mean(acc))) = (t.streams.get(task), t.acc.as_mut()) else {
        let e = RoundError::Internal("the streamed update's folded values are gone (the round moved on)".into());
        return (Err(e), Duration::ZERO, 0.0);
    };
    let took = (Duration::from_secs_f64(stream.seconds), stream.cpu);
    if stream.folded != acc.len() {
        let e = RoundError::Internal(format!(
            "{} of {} values of the streamed update were folded",
            stream.folded,
            acc.len()
        ));
        return (Err(e), took.0, took.1);
    }
    if stream.weight != weight {
        let e = RoundError::Internal(format!(
            "the update was folded with weight {} but commits with weight {weight}",
            stream.weight
        ));
        return (Err(e), took.0, took.1);
    }
    match acc.count(weight) {
        Ok(()) => {
            t.streams.remove(task);
            (Ok(()), took.0, took.1)
        }
        Err(e) => (Err(e.into()), took.0, took.1),
    }
}

/// Subtracts what `task`'s streamed upload folded and closes it; returns the values
/// subtracted. A spill file that cannot be read back breaks the round (its sum is wrong).
///
/// A chunk still folding elsewhere is never lost: the upload is then marked, and subtracted
/// in full once that chunk reports back ([`StreamMsg::Folded`]).
pub(super) fn revert(t: &mut Training, task: &TaskId) -> u64 {
    if let Some(stream) = t.streams.get_mut(task)
        && stream.in_flight
    {
        stream.revert_waiting.get_or_insert(None);
        return 0;
    }
    let Some(stream) = t.streams.remove(task) else { return 0 };
    // Without the sum (the round moved on) there is nothing to put right.
    let Some(RoundSum::Mean(acc)) = t.acc.as_mut() else { return 0 };
    match subtract(acc, &stream) {
        Ok(()) => stream.folded as u64,
        Err(e) => {
            tracing::error!(task = %task, error = %e, "a broken upload could not be subtracted; the round fails");
            t.broken = Some(format!("a broken upload could not be subtracted from the running sum: {e}").into());
            0
        }
    }
}

/// Subtracts every stream still open (the round closes without them).
pub(super) fn revert_all(t: &mut Training) {
    let open: Vec<TaskId> = t.streams.keys().cloned().collect();
    for task in open {
        revert(t, &task);
    }
}

fn subtract(acc: &mut FixedPointAccumulator, stream: &OpenStream) -> Result<(), String> {
    let end = stream.folded * 4;
    let mut buf = vec![0u8; REVERT_PIECE.min(end)];
    let mut at = 0;
    while at < end {
        let n = (end - at).min(buf.len());
        stream.spill.read_at(&mut buf[..n], at as u64).map_err(|e| format!("reading its spill file: {e}"))?;
        acc.unfold_le_range(at / 4, &buf[..n], stream.weight).map_err(|e| e.to_string())?;
        at += n;
    }
    Ok(())
}
