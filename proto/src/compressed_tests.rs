//! Codec properties (round trips, error bounds, unbiasedness) and hostile payloads.

use super::*;
use crate::chunking::{chunks, transfer_digest_hex};
use proptest::prelude::*;

/// SplitMix64: a small seeded source of uniforms for the tests (the sidecar uses ChaCha).
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn decode(compression: Compression, global: &[f32], chunks: &[ParamChunk]) -> Result<(Vec<f32>, String), CodecError> {
    let mut dst = vec![f32::NAN; global.len()];
    let mut d = UpdateDecoder::new(compression, global.len() as u64, global)?;
    for c in chunks {
        d.accept(c, &mut dst)?;
    }
    let digest = d.finish()?;
    Ok((dst, digest))
}

proptest! {
    /// Every coordinate comes back within one quantization step of global + Δ, the chunks
    /// cover the vector, and the digest the sender computes is the one the decoder finds.
    #[test]
    fn int8_round_trip_is_within_one_step(
        delta in proptest::collection::vec(-100f32..100.0, 1..2000),
        chunk_bytes in 1usize..700,
        seed in any::<u64>(),
    ) {
        let global: Vec<f32> = (0..delta.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut u = Uniform(seed);
        let cs = int8_chunks(&delta, chunk_bytes, || u.next());
        let (back, digest) = decode(Compression::Int8, &global, &cs).unwrap();
        prop_assert_eq!(digest, wire_digest_hex(&cs));
        for c in &cs {
            prop_assert!(c.data.len() <= int8_per_chunk(chunk_bytes));
            let s = c.scale;
            for i in c.offset as usize..(c.offset + c.count) as usize {
                let got = back[i] - global[i];
                // One step, plus the f32 rounding of the additions.
                let tol = s * 1.0001 + 1e-5 * (global[i].abs() + delta[i].abs() + 1.0);
                prop_assert!((got - delta[i]).abs() <= tol, "coordinate {}: {} vs {} (scale {})", i, got, delta[i], s);
            }
        }
    }

    /// Sparse chunks carry exactly the pairs given, and nothing else changes.
    #[test]
    fn sparse_round_trip_is_exact(
        total in 1usize..3000,
        picks in proptest::collection::btree_map(0usize..3000, -50f32..50.0, 0..300),
        chunk_bytes in 1usize..400,
    ) {
        let pairs: Vec<(usize, f32)> = picks.into_iter().filter(|(i, _)| *i < total).collect();
        let global: Vec<f32> = (0..total).map(|i| i as f32 * 0.01).collect();
        let cs = sparse_chunks(total, &pairs, chunk_bytes);
        let max = Compression::TopK { fraction: (pairs.len().max(1) as f64 / total as f64).min(1.0) };
        let (back, _) = decode(max, &global, &cs).unwrap();
        let mut want = global.clone();
        for (i, v) in &pairs {
            want[*i] += v;
        }
        prop_assert_eq!(back, want);
        for c in &cs {
            prop_assert!(c.data.len() <= pairs_per_chunk(chunk_bytes) * SPARSE_PAIR_BYTES);
        }
    }
}

proptest! {
    /// The decoder on arbitrary chunk sequences (any encoding, offset, count, scale and
    /// payload): never a panic, accepted ranges contiguous from 0 and in bounds, every
    /// accepted value finite, and `finish` succeeds exactly when they cover every value.
    #[test]
    fn the_decoder_takes_any_bytes_without_panicking(
        total in 0u64..300,
        kind in 0u8..3,
        parts in proptest::collection::vec(
            (0u64..320, 0u64..320, -2i32..4, any::<f32>(), proptest::collection::vec(any::<u8>(), 0..64)),
            0..12,
        ),
    ) {
        let compression = [Compression::None, Compression::Int8, Compression::TopK { fraction: 0.5 }][kind as usize];
        let global = vec![0.25f32; total as usize];
        let mut dst = vec![0.0f32; total as usize];
        let mut d = UpdateDecoder::new(compression, total, &global).unwrap();
        let mut covered = 0u64;
        for (offset, count, encoding, scale, data) in parts {
            // Aim most chunks at the right offset so that acceptance is reachable.
            let offset = if offset % 4 == 0 { offset } else { covered };
            let chunk = ParamChunk { offset, data: Bytes::from(data), encoding, count, scale };
            // The coordinator ends an upload at its first refused chunk.
            let Ok(range) = d.accept(&chunk, &mut dst) else { break };
            prop_assert_eq!(range.start as u64, covered);
            prop_assert!(range.end as u64 <= total);
            prop_assert!(dst[range.clone()].iter().all(|v| v.is_finite()));
            covered = range.end as u64;
            prop_assert_eq!(d.received(), covered);
        }
        prop_assert_eq!(d.finish().is_ok(), covered == total);
    }
}

#[test]
fn int8_is_unbiased_where_nearest_rounding_is_not() {
    // Coordinates at fractional positions 0.1..0.9 of a step: nearest rounding would be
    // off by up to 0.5 step on each, stochastic rounding averages out.
    let delta: Vec<f32> =
        (0..256).map(|i| if i == 0 { 127.0 } else { (i % 10) as f32 * 0.1 + (i % 7) as f32 }).collect();
    let global = vec![0.0f32; delta.len()];
    let mut u = Uniform(42);
    let trials = 4000;
    let mut sum = vec![0.0f64; delta.len()];
    let mut scale = 0.0;
    for _ in 0..trials {
        let cs = int8_chunks(&delta, 1 << 20, || u.next());
        scale = cs[0].scale;
        let (back, _) = decode(Compression::Int8, &global, &cs).unwrap();
        for (s, v) in sum.iter_mut().zip(&back) {
            *s += f64::from(*v);
        }
    }
    // The rounding error of one draw has std ≤ s/2: the mean of 4000 is within 5 standard
    // errors (s/2/√4000 each) with overwhelming probability, while a 0.1-step bias is 7 of
    // them.
    let bound = 5.0 * f64::from(scale) / 2.0 / f64::from(trials).sqrt();
    for (i, (s, d)) in sum.iter().zip(&delta).enumerate() {
        let mean = s / f64::from(trials);
        assert!((mean - f64::from(*d)).abs() <= bound, "coordinate {i}: mean {mean} vs {d} (bound {bound})");
    }
    // And the bound is tight enough to catch nearest rounding on the same inputs.
    let biased = delta
        .iter()
        .filter(|d| (f64::from(**d) - (f64::from(**d) / f64::from(scale)).round() * f64::from(scale)).abs() > bound)
        .count();
    assert!(biased > 100, "the test could not tell nearest rounding apart ({biased} coordinates)");
}

#[test]
fn the_uncompressed_path_is_unchanged_on_the_wire() {
    use prost::Message;
    let values: Vec<f32> = (0..10).map(|i| i as f32 - 3.5).collect();
    let cs: Vec<_> = chunks(&values, 16).collect();
    // Field 1 (offset) and field 2 (data) only, as before encoded chunks existed.
    for c in &cs {
        let mut legacy = Vec::new();
        if c.offset != 0 {
            prost::encoding::uint64::encode(1, &c.offset, &mut legacy);
        }
        prost::encoding::bytes::encode(2, &c.data, &mut legacy);
        assert_eq!(c.encode_to_vec(), legacy);
    }
    let global: Vec<f32> = Vec::new();
    let mut dst = vec![0.0; 10];
    let mut d = UpdateDecoder::new(Compression::None, 10, &global).unwrap();
    for c in &cs {
        d.accept(c, &mut dst).unwrap();
    }
    assert_eq!(d.finish().unwrap(), transfer_digest_hex(&values));
    assert_eq!(dst, values);
}

#[test]
fn the_digest_covers_the_framing() {
    let delta = vec![1.0f32, -2.0, 0.5];
    let cs = int8_chunks(&delta, 1024, || 0.5);
    let mut tampered = cs.clone();
    tampered[0].scale *= 2.0;
    assert_ne!(wire_digest_hex(&cs), wire_digest_hex(&tampered));
    let sparse = sparse_chunks(3, &[(1, 2.0)], 1024);
    let mut moved = sparse.clone();
    moved[0].count = 2;
    assert_ne!(wire_digest_hex(&sparse), wire_digest_hex(&moved));
}

#[test]
fn sparse_chunks_cover_long_empty_ranges_and_split_full_ones() {
    let cs = sparse_chunks(10, &[], 64);
    assert_eq!((cs.len(), cs[0].count, cs[0].data.len()), (1, 10, 0));
    let pairs: Vec<(usize, f32)> = (0..5).map(|i| (i * 2, 1.0)).collect();
    let cs = sparse_chunks(10, &pairs, 16); // two pairs per chunk
    let ranges: Vec<(u64, u64)> = cs.iter().map(|c| (c.offset, c.count)).collect();
    assert_eq!(ranges, vec![(0, 4), (4, 4), (8, 2)]);
    assert!(sparse_chunks(0, &[], 64).is_empty());
}

fn int8_chunk(offset: u64, scale: f32, q: &[i8]) -> ParamChunk {
    ParamChunk {
        offset,
        data: Bytes::from(q.iter().map(|v| *v as u8).collect::<Vec<_>>()),
        encoding: ChunkEncoding::Int8 as i32,
        count: q.len() as u64,
        scale,
    }
}

fn sparse_chunk(offset: u64, count: u64, pairs: &[(u32, f32)]) -> ParamChunk {
    let mut data = Vec::new();
    for (i, v) in pairs {
        data.extend_from_slice(&i.to_le_bytes());
        data.extend_from_slice(&v.to_le_bytes());
    }
    ParamChunk { offset, data: Bytes::from(data), encoding: ChunkEncoding::Sparse as i32, count, scale: 0.0 }
}

fn refusal(compression: Compression, chunks: &[ParamChunk]) -> String {
    let global = vec![0.5f32; 8];
    decode(compression, &global, chunks).unwrap_err().to_string()
}

#[test]
fn hostile_payloads_are_refused_naming_what_was_wrong() {
    let top = Compression::TopK { fraction: 0.5 };
    let cases: Vec<(Compression, Vec<ParamChunk>, &str)> = vec![
        (Compression::Int8, vec![int8_chunk(0, f32::NAN, &[1; 8])], "scale NaN"),
        (Compression::Int8, vec![int8_chunk(0, -1.0, &[1; 8])], "scale -1"),
        (Compression::Int8, vec![int8_chunk(0, f32::INFINITY, &[0; 8])], "scale inf"),
        (Compression::Int8, vec![int8_chunk(0, 1.0, &[1, 2, -128, 0, 0, 0, 0, 0])], "-128 at coordinate 2"),
        (
            Compression::Int8,
            vec![ParamChunk { count: 8, ..int8_chunk(0, 1.0, &[1; 7]) }],
            "has 7 bytes for 8 coordinates",
        ),
        (Compression::Int8, vec![int8_chunk(0, 1.0, &[1; 9])], "overruns the declared total of 8"),
        (Compression::Int8, vec![int8_chunk(2, 1.0, &[1; 6])], "expected offset 0"),
        (Compression::Int8, vec![int8_chunk(0, 1.0, &[])], "covers no coordinates"),
        (Compression::Int8, vec![int8_chunk(0, 3e38, &[127; 8])], "update value at index 0 is not finite"),
        (Compression::Int8, vec![int8_chunk(0, 1.0, &[1; 4])], "received 4 of 8"),
        (Compression::Int8, vec![sparse_chunk(0, 8, &[])], "sparse-encoded, but this run's updates are int8"),
        (Compression::None, vec![int8_chunk(0, 1.0, &[1; 8])], "int8-encoded, but this run's updates are f32"),
        (top, vec![int8_chunk(0, 1.0, &[1; 8])], "int8-encoded, but this run's updates are sparse"),
        (top, vec![sparse_chunk(0, 8, &[(8, 1.0)])], "index 8, not below its count 8"),
        (top, vec![sparse_chunk(0, 4, &[(1, 1.0)]), sparse_chunk(4, 4, &[(4, 1.0)])], "index 4, not below its count 4"),
        (top, vec![sparse_chunk(0, 8, &[(3, 1.0), (2, 1.0)])], "index 2 after 3"),
        (top, vec![sparse_chunk(0, 8, &[(3, 1.0), (3, 1.0)])], "index 3 after 3"),
        (top, vec![sparse_chunk(0, 8, &[(3, f32::NAN)])], "non-finite value at index 3"),
        (top, vec![sparse_chunk(0, 8, &[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)])], "more than 4 sparse"),
        (
            top,
            vec![ParamChunk { data: Bytes::from(vec![0u8; 7]), ..sparse_chunk(0, 8, &[]) }],
            "7 bytes, not a whole number of 8-byte pairs",
        ),
        (
            Compression::None,
            vec![ParamChunk { count: 2, ..chunks(&[1.0f32, 2.0], 1024).next().unwrap() }],
            "sets count or scale",
        ),
        (Compression::Int8, vec![ParamChunk { encoding: 9, ..int8_chunk(0, 1.0, &[1; 8]) }], "is unknown-encoded"),
    ];
    for (compression, chunks, want) in cases {
        let e = refusal(compression, &chunks);
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
    let global = vec![0.0f32; 3];
    assert!(matches!(
        UpdateDecoder::new(Compression::Int8, 8, &global),
        Err(CodecError::GlobalLength { got: 3, total: 8 })
    ));
}
