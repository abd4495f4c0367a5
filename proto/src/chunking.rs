//! Cutting flat `f32` parameter vectors into [`ParamChunk`]s and putting them back.
//!
//! Contract shared by every transfer: values are little-endian `f32`; a transfer of
//! `total` values is a sequence of chunks whose `offset`s start at 0 and are contiguous,
//! whose payload is a whole number of values, and which together cover exactly
//! `[0, total)`. [`ChunkCursor`] checks that contract without buffering anything, so a
//! receiver can decode each chunk straight into its destination.

use crate::pb::ParamChunk;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Default payload size of one chunk: 256 KiB. Each stream in flight holds about one encoded
/// chunk in gRPC buffers on each side, so smaller chunks keep a coordinator serving
/// hundreds of transfers at once within its memory bound; 256 KiB still amortises the
/// per-message cost (measured in BENCHMARKS.md, "End-to-end rounds").
pub const DEFAULT_CHUNK_BYTES: usize = 256 << 10;
/// Smallest accepted chunk payload (one value).
pub const MIN_CHUNK_BYTES: usize = 4;
/// Largest accepted chunk payload: keeps every message under tonic's 4 MiB default limit.
pub const MAX_CHUNK_BYTES: usize = 3 << 20;

/// A chunk stream broke the transfer contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk at offset {got} out of order: expected offset {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("chunk payload of {0} bytes is not a whole number of f32 values")]
    Misaligned(usize),
    #[error("chunk at offset {offset} with {values} values overruns the declared total of {total}")]
    Overrun { offset: u64, values: u64, total: u64 },
    #[error("empty chunk at offset {0}")]
    Empty(u64),
    #[error("transfer incomplete: received {received} of {total} values")]
    Incomplete { received: u64, total: u64 },
    #[error("digest mismatch: declared {declared}, computed {computed}")]
    DigestMismatch { declared: String, computed: String },
}

/// Number of whole `f32` values that fit in `chunk_bytes`, at least one.
fn values_per_chunk(chunk_bytes: usize) -> usize {
    (chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES) / 4).max(1)
}

/// Encodes `values` as little-endian bytes.
pub fn encode_le(values: &[f32]) -> Vec<u8> {
    // Sized once and filled in place: the loop compiles to a plain copy on little-endian
    // machines (pushing per value checked the capacity each time, about 1 GB/s).
    let mut out = vec![0u8; values.len() * 4];
    for (b, v) in out.chunks_exact_mut(4).zip(values) {
        b.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes little-endian bytes into `dst`; `data.len()` must be `4 * dst.len()`.
///
/// # Panics
/// If the lengths disagree (callers check alignment through [`ChunkCursor`] first).
pub fn decode_le_into(data: &[u8], dst: &mut [f32]) {
    assert_eq!(data.len(), dst.len() * 4, "decode_le_into length mismatch");
    for (d, b) in dst.iter_mut().zip(data.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Iterates over `values` as chunks of at most `chunk_bytes` payload (clamped to
/// [`MIN_CHUNK_BYTES`]..=[`MAX_CHUNK_BYTES`]). An empty vector yields no chunk.
pub fn chunks(values: &[f32], chunk_bytes: usize) -> impl Iterator<Item = ParamChunk> + '_ {
    let per = values_per_chunk(chunk_bytes);
    values.chunks(per).enumerate().map(move |(i, slice)| ParamChunk {
        offset: (i * per) as u64,
        data: Bytes::from(encode_le(slice)),
        ..ParamChunk::default()
    })
}

/// Hex sha256 of the little-endian bytes of `values`: the weights digest published checkpoints
/// carry in their manifest (provenance, not transfer integrity: see [`transfer_digest_hex`]).
pub fn sha256_hex(values: &[f32]) -> String {
    let mut h = Sha256::new();
    // Hash in bounded pieces so that no second copy of a large model is made.
    for piece in values.chunks(64 * 1024) {
        h.update(encode_le(piece));
    }
    hex::encode(h.finalize())
}

/// Hex sha256 of raw bytes (e.g. a checkpoint file).
pub fn sha256_bytes_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex XXH3-128 of the little-endian bytes of `values`: the digest every parameter
/// transfer declares (see `ModelHeader.digest` in the proto for why not sha256).
pub fn transfer_digest_hex(values: &[f32]) -> String {
    let mut d = StreamDigest::default();
    for piece in values.chunks(64 * 1024) {
        d.update(&encode_le(piece));
    }
    d.finish_hex()
}

/// Incremental XXH3-128 over chunk payloads, equal to [`transfer_digest_hex`] of the
/// whole vector. Runs at tens of GB/s, so it costs the upload path almost nothing.
#[derive(Clone)]
pub struct StreamDigest(Box<xxhash_rust::xxh3::Xxh3>);

impl Default for StreamDigest {
    fn default() -> Self {
        Self(Box::new(xxhash_rust::xxh3::Xxh3::new()))
    }
}

impl StreamDigest {
    pub fn update(&mut self, le_bytes: &[u8]) {
        self.0.update(le_bytes);
    }
    pub fn finish_hex(self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// A parameter vector held once and shared: by the engine, by every handler streaming it
/// to a client, and by every chunk in flight. On little-endian targets the in-memory `f32`
/// bytes *are* the wire encoding, so [`SharedParams::chunk`] is a zero-copy view and a
/// broadcast to N clients costs no per-client copy of the model.
#[derive(Debug, Clone)]
pub struct SharedParams(Arc<Vec<f32>>);

/// A view of a range of a shared vector as little-endian bytes (keeps the vector alive).
#[cfg(target_endian = "little")]
struct ChunkView {
    params: Arc<Vec<f32>>,
    range: std::ops::Range<usize>,
}

#[cfg(target_endian = "little")]
impl AsRef<[u8]> for ChunkView {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.params[self.range.clone()])
    }
}

impl SharedParams {
    pub fn new(values: Vec<f32>) -> Self {
        Self(Arc::new(values))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The little-endian bytes of `values[range]`, without copying on little-endian targets.
    ///
    /// # Panics
    /// If `range` is out of bounds.
    pub fn chunk(&self, range: std::ops::Range<usize>) -> Bytes {
        assert!(range.start <= range.end && range.end <= self.0.len(), "chunk range out of bounds");
        #[cfg(target_endian = "little")]
        {
            Bytes::from_owner(ChunkView { params: Arc::clone(&self.0), range })
        }
        #[cfg(not(target_endian = "little"))]
        {
            Bytes::from(encode_le(&self.0[range]))
        }
    }

    /// The vector back, when nothing else (no handler, no chunk in flight) still shares it;
    /// lets a round reuse the old model's allocation for the new one.
    ///
    /// # Errors
    /// `self` unchanged when the vector is still shared.
    /// Another reference to the same buffer (no copy): what an in-process link hands to a
    /// client instead of streaming chunks. While it lives, [`Self::try_into_vec`] fails.
    pub fn shared(&self) -> Arc<Vec<f32>> {
        Arc::clone(&self.0)
    }

    pub fn try_into_vec(self) -> Result<Vec<f32>, Self> {
        Arc::try_unwrap(self.0).map_err(Self)
    }
}

/// Checks that a sequence of chunks respects the transfer contract, without buffering.
#[derive(Debug, Clone)]
pub struct ChunkCursor {
    total: u64,
    next: u64,
}

impl ChunkCursor {
    pub fn new(total: u64) -> Self {
        Self { total, next: 0 }
    }

    /// Validates the next chunk and returns the element range it covers.
    ///
    /// # Errors
    /// Out-of-order, misaligned, empty or overrunning chunks.
    pub fn accept(&mut self, chunk: &ParamChunk) -> Result<std::ops::Range<usize>, ChunkError> {
        if chunk.offset != self.next {
            return Err(ChunkError::OutOfOrder { expected: self.next, got: chunk.offset });
        }
        if !chunk.data.len().is_multiple_of(4) {
            return Err(ChunkError::Misaligned(chunk.data.len()));
        }
        let values = (chunk.data.len() / 4) as u64;
        if values == 0 {
            return Err(ChunkError::Empty(chunk.offset));
        }
        if chunk.offset + values > self.total {
            return Err(ChunkError::Overrun { offset: chunk.offset, values, total: self.total });
        }
        let start = self.next as usize;
        self.next += values;
        Ok(start..self.next as usize)
    }

    /// Values received so far.
    pub fn received(&self) -> u64 {
        self.next
    }

    /// # Errors
    /// [`ChunkError::Incomplete`] unless every value has been received.
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.next == self.total {
            Ok(())
        } else {
            Err(ChunkError::Incomplete { received: self.next, total: self.total })
        }
    }
}

/// Rebuilds a whole vector from chunks (for receivers that need the full model anyway,
/// such as a client fetching the global model).
#[derive(Clone)]
pub struct Reassembler {
    cursor: ChunkCursor,
    values: Vec<f32>,
    digest: StreamDigest,
}

impl Reassembler {
    /// Prepares to receive `total` values. The buffer is allocated once, up front.
    pub fn new(total: u64) -> Self {
        Self { cursor: ChunkCursor::new(total), values: vec![0.0; total as usize], digest: StreamDigest::default() }
    }

    /// # Errors
    /// See [`ChunkCursor::accept`].
    pub fn push(&mut self, chunk: &ParamChunk) -> Result<(), ChunkError> {
        let range = self.cursor.accept(chunk)?;
        decode_le_into(&chunk.data, &mut self.values[range]);
        self.digest.update(&chunk.data);
        Ok(())
    }

    /// Returns the vector once complete; checks `expected_digest` (see
    /// [`transfer_digest_hex`]) when it is non-empty.
    ///
    /// # Errors
    /// Incomplete transfer or digest mismatch.
    pub fn finish(self, expected_digest: &str) -> Result<Vec<f32>, ChunkError> {
        self.cursor.finish()?;
        let computed = self.digest.finish_hex();
        if !expected_digest.is_empty() && !expected_digest.eq_ignore_ascii_case(&computed) {
            return Err(ChunkError::DigestMismatch { declared: expected_digest.to_string(), computed });
        }
        Ok(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_is_bit_exact(values in proptest::collection::vec(any::<f32>(), 0..3000), chunk_bytes in 1usize..5000) {
            let sha = transfer_digest_hex(&values);
            let mut r = Reassembler::new(values.len() as u64);
            for c in chunks(&values, chunk_bytes) {
                prop_assert!(c.data.len() <= values_per_chunk(chunk_bytes) * 4);
                r.push(&c).unwrap();
            }
            let back = r.finish(&sha).unwrap();
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in back.iter().zip(&values) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }

    proptest! {
        /// The update-stream decoder on arbitrary chunk sequences: never a panic, accepted
        /// ranges are in bounds and contiguous from 0, and `finish` succeeds exactly when the
        /// accepted chunks cover every value.
        #[test]
        fn the_decoder_accepts_only_an_exact_in_order_cover(
            total in 0u64..600,
            parts in proptest::collection::vec((0u64..700, 0usize..300), 0..20),
        ) {
            let mut cursor = ChunkCursor::new(total);
            let mut covered = 0u64;
            for (offset, bytes) in parts {
                let chunk = ParamChunk { offset, data: vec![0u8; bytes].into(), ..ParamChunk::default() };
                if let Ok(range) = cursor.accept(&chunk) {
                    prop_assert_eq!(range.start as u64, covered);
                    prop_assert!(range.end as u64 <= total);
                    covered = range.end as u64;
                }
                prop_assert_eq!(cursor.received(), covered);
            }
            prop_assert_eq!(cursor.finish().is_ok(), covered == total);
        }
    }

    #[test]
    fn rejects_gaps_overruns_and_truncation() {
        let values: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let cs: Vec<_> = chunks(&values, 16).collect();
        assert_eq!(cs.len(), 3);

        let mut r = Reassembler::new(10);
        assert_eq!(r.push(&cs[1]), Err(ChunkError::OutOfOrder { expected: 0, got: 4 }));

        let mut r = Reassembler::new(6);
        r.push(&cs[0]).unwrap();
        assert!(matches!(r.push(&cs[1]), Err(ChunkError::Overrun { .. })));

        let mut r = Reassembler::new(10);
        r.push(&cs[0]).unwrap();
        r.push(&cs[1]).unwrap();
        assert_eq!(r.finish(""), Err(ChunkError::Incomplete { received: 8, total: 10 }));

        let mut r = Reassembler::new(10);
        let bad = ParamChunk { offset: 0, data: Bytes::from(vec![0u8; 5]), ..ParamChunk::default() };
        assert_eq!(r.push(&bad), Err(ChunkError::Misaligned(5)));
    }

    #[test]
    fn digest_mismatch_is_reported() {
        let values = vec![1.0f32, 2.0];
        let mut r = Reassembler::new(2);
        for c in chunks(&values, 1024) {
            r.push(&c).unwrap();
        }
        assert!(matches!(r.finish("00"), Err(ChunkError::DigestMismatch { .. })));
    }
}
