//! Compressed update chunks: the wire codecs of a run's `[compression]` and the decoder the
//! coordinator runs on every upload.
//!
//! A compressed upload carries the update Δ = local − global, never the model. Each chunk
//! covers the coordinates `[offset, offset + count)` and, as with the uncompressed
//! encoding, the chunks of one upload start at 0, are contiguous and cover exactly
//! `[0, total)`. By [`ChunkEncoding`]:
//!
//! - `Int8`: `data` is `count` signed bytes qᵢ ∈ [−127, 127] and `scale` s ≥ 0 (finite);
//!   Δ̂ᵢ = s·qᵢ. [`int8_chunks`] picks s = max|Δᵢ|/127 per chunk and rounds Δᵢ/s
//!   stochastically (up with probability equal to the fractional part), so E[Δ̂ᵢ] = Δᵢ and
//!   |Δ̂ᵢ − Δᵢ| < s.
//! - `Sparse`: `data` is n pairs (u32 LE index relative to `offset`, f32 LE value), indices
//!   strictly increasing and below `count`; Δ̂ is 0 at every other coordinate. An upload
//!   carries at most [`Compression::max_sent`] pairs in all.
//!
//! [`UpdateDecoder`] checks all of that and writes `global[i] + Δ̂ᵢ` straight into the
//! destination (the coordinator's staging buffer): no full-size intermediate. The upload's
//! digest covers the bytes on the wire ([`WireDigest`]): for an uncompressed chunk its
//! payload alone (so that path is unchanged), for an encoded chunk its framing (encoding,
//! offset, count, scale, payload length) and then its payload, so a flipped scale is caught
//! as surely as a flipped value.

use crate::chunking::{ChunkCursor, ChunkError, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, StreamDigest, decode_le_into};
use crate::pb::{ChunkEncoding, ParamChunk};
use bytes::Bytes;
use fedra_types::plan::Compression;
use std::ops::Range;

/// Bytes of one sparse (index, value) pair.
pub const SPARSE_PAIR_BYTES: usize = 8;

/// A chunk (or a whole upload) broke the compressed transfer contract. Messages name the
/// chunk by its offset and say what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("chunk at offset {offset} is {got}-encoded, but this run's updates are {expected}")]
    Encoding { offset: u64, got: &'static str, expected: &'static str },
    #[error("f32 chunk at offset {offset} sets count or scale, which only encoded chunks carry")]
    StrayFraming { offset: u64 },
    #[error("chunk at offset {0} covers no coordinates")]
    Empty(u64),
    #[error("chunk at offset {offset} with {count} coordinates overruns the declared total of {total}")]
    Overrun { offset: u64, count: u64, total: u64 },
    #[error("int8 chunk at offset {offset} has {len} bytes for {count} coordinates")]
    Int8Length { offset: u64, len: usize, count: u64 },
    #[error("int8 chunk at offset {offset} has scale {scale}, which must be finite and non-negative")]
    Scale { offset: u64, scale: f32 },
    #[error("int8 chunk at offset {offset} holds -128 at coordinate {index}, outside [-127, 127]")]
    Int8Range { offset: u64, index: u64 },
    #[error("sparse chunk at offset {offset} has {len} bytes, not a whole number of 8-byte pairs")]
    SparseMisaligned { offset: u64, len: usize },
    #[error("sparse chunk at offset {offset} holds index {index}, not below its count {count}")]
    IndexOutOfRange { offset: u64, index: u32, count: u64 },
    #[error("sparse chunk at offset {offset} holds index {index} after {previous}: indices must strictly increase")]
    Unsorted { offset: u64, index: u32, previous: u32 },
    #[error("sparse chunk at offset {offset} holds a non-finite value at index {index}")]
    SparseValue { offset: u64, index: u32 },
    #[error("the update carries more than {max} sparse coordinates, the most top_k allows")]
    TooManyPairs { max: u64 },
    #[error("update value at index {0} is not finite")]
    NotFinite(u64),
    #[error("the global model has {got} values, the update declares {total}")]
    GlobalLength { got: usize, total: u64 },
}

fn encoding_name(e: ChunkEncoding) -> &'static str {
    match e {
        ChunkEncoding::F32 => "f32",
        ChunkEncoding::Int8 => "int8",
        ChunkEncoding::Sparse => "sparse",
    }
}

/// The chunk encoding a run's compression calls for.
pub fn encoding_of(c: &Compression) -> ChunkEncoding {
    match c {
        Compression::None => ChunkEncoding::F32,
        Compression::Int8 => ChunkEncoding::Int8,
        Compression::TopK { .. } => ChunkEncoding::Sparse,
    }
}

/// The digest of an upload's wire bytes (see the module doc). Equal to
/// [`crate::chunking::transfer_digest_hex`] of the values for an uncompressed upload.
#[derive(Clone, Default)]
pub struct WireDigest(StreamDigest);

impl WireDigest {
    pub fn update(&mut self, chunk: &ParamChunk) {
        if chunk.encoding != ChunkEncoding::F32 as i32 || chunk.count != 0 || chunk.scale.to_bits() != 0 {
            let mut framing = [0u8; 29];
            framing[..4].copy_from_slice(&chunk.encoding.to_le_bytes());
            framing[4..12].copy_from_slice(&chunk.offset.to_le_bytes());
            framing[12..20].copy_from_slice(&chunk.count.to_le_bytes());
            framing[20..24].copy_from_slice(&chunk.scale.to_bits().to_le_bytes());
            framing[24..28].copy_from_slice(&(chunk.data.len() as u32).to_le_bytes());
            framing[28] = 0xC5;
            self.0.update(&framing);
        }
        self.0.update(&chunk.data);
    }

    pub fn finish_hex(self) -> String {
        self.0.finish_hex()
    }
}

/// The hex digest of a whole sequence of chunks (what a sender puts in the trailer).
pub fn wire_digest_hex<'a>(chunks: impl IntoIterator<Item = &'a ParamChunk>) -> String {
    let mut d = WireDigest::default();
    for c in chunks {
        d.update(c);
    }
    d.finish_hex()
}

/// Bytes of `chunk` as a protobuf message: what it costs on the wire before gRPC framing.
pub fn encoded_len(chunk: &ParamChunk) -> usize {
    prost::Message::encoded_len(chunk)
}

/// Coordinates per int8 chunk for a payload budget of `chunk_bytes`.
fn int8_per_chunk(chunk_bytes: usize) -> usize {
    chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
}

/// Sparse pairs per chunk for a payload budget of `chunk_bytes`, at least one.
fn pairs_per_chunk(chunk_bytes: usize) -> usize {
    (chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES) / SPARSE_PAIR_BYTES).max(1)
}

/// Quantizes `delta` to int8 chunks of at most `chunk_bytes` coordinates each (see the
/// module doc). `uniform` draws from [0, 1); seed it so that a run reproduces.
///
/// Non-finite deltas produce a non-finite scale, which the receiver refuses: the encoder
/// does not hide a diverged model.
pub fn int8_chunks(delta: &[f32], chunk_bytes: usize, mut uniform: impl FnMut() -> f64) -> Vec<ParamChunk> {
    let per = int8_per_chunk(chunk_bytes);
    let mut out = Vec::with_capacity(delta.len().div_ceil(per));
    let mut q = Vec::with_capacity(per.min(delta.len()));
    for (i, slice) in delta.chunks(per).enumerate() {
        let max = slice.iter().fold(0.0f32, |m, v| if v.abs() > m || v.is_nan() { v.abs() } else { m });
        let scale = max / 127.0;
        q.clear();
        if scale > 0.0 && scale.is_finite() {
            let s = f64::from(scale);
            q.extend(slice.iter().map(|v| {
                let x = (f64::from(*v) / s).clamp(-127.0, 127.0);
                let floor = x.floor();
                let up = uniform() < x - floor;
                (floor as i32 + i32::from(up)).clamp(-127, 127) as i8 as u8
            }));
        } else {
            q.resize(slice.len(), 0);
        }
        out.push(ParamChunk {
            offset: (i * per) as u64,
            data: Bytes::copy_from_slice(&q),
            encoding: ChunkEncoding::Int8 as i32,
            count: slice.len() as u64,
            scale,
        });
    }
    out
}

/// Encodes the sparse update `pairs` (absolute coordinate, value; strictly increasing
/// coordinates below `total`) as chunks of at most `chunk_bytes` of pairs that together
/// cover `[0, total)`. A chunk's count never exceeds what a u32 relative index reaches.
///
/// # Panics
/// If `pairs` is unsorted or reaches past `total` (the encoder's caller built it).
pub fn sparse_chunks(total: usize, pairs: &[(usize, f32)], chunk_bytes: usize) -> Vec<ParamChunk> {
    let per = pairs_per_chunk(chunk_bytes);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut payload: Vec<u8> = Vec::with_capacity(per.min(pairs.len()) * SPARSE_PAIR_BYTES);
    let close = |out: &mut Vec<ParamChunk>, payload: &mut Vec<u8>, start: usize, end: usize| {
        out.push(ParamChunk {
            offset: start as u64,
            data: Bytes::from(std::mem::take(payload)),
            encoding: ChunkEncoding::Sparse as i32,
            count: (end - start) as u64,
            scale: 0.0,
        });
    };
    let mut last: Option<usize> = None;
    for &(index, value) in pairs {
        assert!(index < total && last.is_none_or(|l| index > l), "sparse pairs must be sorted and in range");
        last = Some(index);
        let full = payload.len() / SPARSE_PAIR_BYTES >= per;
        if full || index - start > u32::MAX as usize {
            close(&mut out, &mut payload, start, index);
            start = index;
        }
        payload.extend_from_slice(&((index - start) as u32).to_le_bytes());
        payload.extend_from_slice(&value.to_le_bytes());
    }
    // The rest of the range, up to u32::MAX coordinates per chunk.
    while start < total {
        let end = total.min(start + u32::MAX as usize);
        close(&mut out, &mut payload, start, end);
        start = end;
    }
    out
}

/// Checks an upload's chunks against the run's compression and decodes each straight into
/// its destination, as `global + Δ̂` for encoded chunks and the values themselves for
/// uncompressed ones. Nothing is buffered beyond the destination.
pub struct UpdateDecoder<'g> {
    compression: Compression,
    global: &'g [f32],
    total: u64,
    /// The uncompressed path's own contract checker (byte-identical behaviour).
    cursor: ChunkCursor,
    next: u64,
    pairs: u64,
    max_pairs: u64,
    digest: WireDigest,
}

impl<'g> UpdateDecoder<'g> {
    /// A decoder for an upload of `total` values in a run with `compression`; `global` is
    /// the round's model (unused, and may be empty, without compression).
    ///
    /// # Errors
    /// [`CodecError::GlobalLength`] when a compressed run's global model is not `total` long.
    pub fn new(compression: Compression, total: u64, global: &'g [f32]) -> Result<Self, CodecError> {
        if compression != Compression::None && global.len() as u64 != total {
            return Err(CodecError::GlobalLength { got: global.len(), total });
        }
        let max_pairs = compression.max_sent(usize::try_from(total).unwrap_or(usize::MAX)) as u64;
        Ok(Self {
            compression,
            global,
            total,
            cursor: ChunkCursor::new(total),
            next: 0,
            pairs: 0,
            max_pairs,
            digest: WireDigest::default(),
        })
    }

    /// Values (coordinates) covered so far.
    pub fn received(&self) -> u64 {
        if self.compression == Compression::None { self.cursor.received() } else { self.next }
    }

    /// Checks `chunk` and decodes it into `dst`, the whole destination of `total` values.
    /// Returns the coordinate range it covered. On an error, `dst` may hold part of the
    /// chunk: the caller discards the upload (the decoder's state is then unspecified).
    ///
    /// # Errors
    /// Any breach of the contract in the module doc, or a decoded value that is not finite.
    ///
    /// # Panics
    /// If `dst` is shorter than the declared total.
    pub fn accept(&mut self, chunk: &ParamChunk, dst: &mut [f32]) -> Result<Range<usize>, CodecError> {
        assert!(dst.len() as u64 >= self.total, "destination shorter than the declared total");
        let expected = encoding_of(&self.compression);
        let got = ChunkEncoding::try_from(chunk.encoding).map_err(|_| CodecError::Encoding {
            offset: chunk.offset,
            got: "unknown",
            expected: encoding_name(expected),
        })?;
        if got != expected {
            return Err(CodecError::Encoding {
                offset: chunk.offset,
                got: encoding_name(got),
                expected: encoding_name(expected),
            });
        }
        let range = match got {
            ChunkEncoding::F32 => {
                let range = self.plain_framing(chunk)?;
                let start = range.start;
                let out = &mut dst[range.clone()];
                decode_le_into(&chunk.data, out);
                if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                    return Err(CodecError::NotFinite((start + i) as u64));
                }
                range
            }
            ChunkEncoding::Int8 => {
                let range = self.framing(chunk)?;
                self.int8(chunk, range.clone(), dst)?;
                self.next = range.end as u64;
                range
            }
            ChunkEncoding::Sparse => {
                let range = self.framing(chunk)?;
                self.sparse(chunk, range.clone(), dst)?;
                self.next = range.end as u64;
                range
            }
        };
        self.digest.update(chunk);
        Ok(range)
    }

    /// Checks an uncompressed upload's `chunk` and adds it to the digest without decoding it:
    /// the caller folds the received bytes straight into a sum (a streaming upload), which
    /// also refuses values that are not finite. Returns the coordinate range it covers.
    ///
    /// # Errors
    /// A compressed run's decoder, or any breach of the uncompressed contract.
    pub fn accept_unstaged(&mut self, chunk: &ParamChunk) -> Result<Range<usize>, CodecError> {
        let got = ChunkEncoding::try_from(chunk.encoding).map_err(|_| CodecError::Encoding {
            offset: chunk.offset,
            got: "unknown",
            expected: encoding_name(ChunkEncoding::F32),
        })?;
        let expected = encoding_of(&self.compression);
        if got != ChunkEncoding::F32 || expected != ChunkEncoding::F32 {
            return Err(CodecError::Encoding {
                offset: chunk.offset,
                got: encoding_name(got),
                expected: encoding_name(expected),
            });
        }
        let range = self.plain_framing(chunk)?;
        self.digest.update(chunk);
        Ok(range)
    }

    /// An uncompressed chunk's framing and order.
    fn plain_framing(&mut self, chunk: &ParamChunk) -> Result<Range<usize>, CodecError> {
        if chunk.count != 0 || chunk.scale.to_bits() != 0 {
            return Err(CodecError::StrayFraming { offset: chunk.offset });
        }
        Ok(self.cursor.accept(chunk)?)
    }

    /// The coordinate range of an encoded chunk, checked for order, emptiness and overrun
    /// (taken as received only once its payload decoded).
    fn framing(&self, chunk: &ParamChunk) -> Result<Range<usize>, CodecError> {
        if chunk.offset != self.next {
            return Err(ChunkError::OutOfOrder { expected: self.next, got: chunk.offset }.into());
        }
        if chunk.count == 0 {
            return Err(CodecError::Empty(chunk.offset));
        }
        if chunk.count > self.total - self.next {
            return Err(CodecError::Overrun { offset: chunk.offset, count: chunk.count, total: self.total });
        }
        let start = self.next as usize;
        Ok(start..(self.next + chunk.count) as usize)
    }

    fn int8(&self, chunk: &ParamChunk, range: Range<usize>, dst: &mut [f32]) -> Result<(), CodecError> {
        let offset = chunk.offset;
        if chunk.data.len() as u64 != chunk.count {
            return Err(CodecError::Int8Length { offset, len: chunk.data.len(), count: chunk.count });
        }
        let s = chunk.scale;
        if !(s.is_finite() && s >= 0.0) {
            return Err(CodecError::Scale { offset, scale: s });
        }
        let start = range.start;
        let global = &self.global[range.clone()];
        for (i, ((d, g), b)) in dst[range].iter_mut().zip(global).zip(chunk.data.iter()).enumerate() {
            let q = *b as i8;
            if q == i8::MIN {
                return Err(CodecError::Int8Range { offset, index: (start + i) as u64 });
            }
            *d = g + s * f32::from(q);
            if !d.is_finite() {
                return Err(CodecError::NotFinite((start + i) as u64));
            }
        }
        Ok(())
    }

    fn sparse(&mut self, chunk: &ParamChunk, range: Range<usize>, dst: &mut [f32]) -> Result<(), CodecError> {
        let offset = chunk.offset;
        if !chunk.data.len().is_multiple_of(SPARSE_PAIR_BYTES) {
            return Err(CodecError::SparseMisaligned { offset, len: chunk.data.len() });
        }
        let n = (chunk.data.len() / SPARSE_PAIR_BYTES) as u64;
        if n > self.max_pairs - self.pairs {
            return Err(CodecError::TooManyPairs { max: self.max_pairs });
        }
        let start = range.start;
        dst[range.clone()].copy_from_slice(&self.global[range]);
        let mut previous: Option<u32> = None;
        for pair in chunk.data.chunks_exact(SPARSE_PAIR_BYTES) {
            let index = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
            let value = f32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
            if u64::from(index) >= chunk.count {
                return Err(CodecError::IndexOutOfRange { offset, index, count: chunk.count });
            }
            if let Some(previous) = previous
                && index <= previous
            {
                return Err(CodecError::Unsorted { offset, index, previous });
            }
            previous = Some(index);
            if !value.is_finite() {
                return Err(CodecError::SparseValue { offset, index });
            }
            let at = start + index as usize;
            dst[at] += value;
            if !dst[at].is_finite() {
                return Err(CodecError::NotFinite(at as u64));
            }
        }
        self.pairs += n;
        Ok(())
    }

    /// Checks that every coordinate was covered and returns the digest of the wire bytes.
    ///
    /// # Errors
    /// [`ChunkError::Incomplete`] when coordinates are missing.
    pub fn finish(self) -> Result<String, CodecError> {
        if self.compression == Compression::None {
            self.cursor.finish()?;
        } else if self.next != self.total {
            return Err(ChunkError::Incomplete { received: self.next, total: self.total }.into());
        }
        Ok(self.digest.finish_hex())
    }
}

#[cfg(test)]
#[path = "compressed_tests.rs"]
mod tests;
