//! Streaming aggregation throughput: GB/s of update bytes folded into the running FedAvg
//! sum, beside a plain memcpy of the same number of bytes. Run with
//! `bash bench/aggregation.sh` (writes BENCHMARKS.md) or
//! `cargo bench -p fedra-coordinator --bench aggregation`.
//!
//! What one "update" costs on the coordinator's hot path, per the aggregation module's
//! contract. Staged: decode each received little-endian chunk into a staging buffer, then
//! fold the staged update into the running sum (f64, or the fixed-point sum of plain rounds
//! on every core). Streamed: per chunk, the digest and a fixed-point fold straight from the
//! received bytes, with and without appending the chunk to the upload's spill file.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedra_coordinator::aggregation::{FedAvgAccumulator, FixedPointAccumulator, FixedScale};
use fedra_coordinator::round::stream::UploadSpill;
use fedra_proto::chunking::{DEFAULT_CHUNK_BYTES, StreamDigest, chunks, decode_le_into};
use fedra_proto::pb::ParamChunk;
use std::hint::black_box;

/// Decodes a received chunk sequence into the staging buffer, as the upload handler does.
fn decode_all(wire: &[ParamChunk], staging: &mut [f32]) {
    let mut offset = 0;
    for ch in wire {
        let n = ch.data.len() / 4;
        decode_le_into(&ch.data, &mut staging[offset..offset + n]);
        offset += n;
    }
}

fn bench(c: &mut Criterion) {
    for &params in &[1_000_000usize, 10_000_000] {
        let update: Vec<f32> = (0..params).map(|i| ((i % 1000) as f32) * 1e-3 - 0.5).collect();
        // The chunks exactly as they arrive from gRPC (1 MiB payloads).
        let wire: Vec<_> = chunks(&update, DEFAULT_CHUNK_BYTES).collect();
        let bytes = (params * 4) as u64;
        let mut g = c.benchmark_group(format!("aggregation_{}M", params / 1_000_000));
        g.throughput(Throughput::Bytes(bytes));
        g.sample_size(if params > 1_000_000 { 20 } else { 50 });

        let src: Vec<u8> = fedra_proto::chunking::encode_le(&update);
        let mut dst = vec![0u8; src.len()];
        g.bench_function(BenchmarkId::new("memcpy", params), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });

        let mut staging = vec![0f32; params];
        g.bench_function(BenchmarkId::new("decode_chunks", params), |b| {
            b.iter(|| {
                decode_all(black_box(&wire), &mut staging);
                black_box(&staging);
            })
        });

        let mut acc = FedAvgAccumulator::new(params);
        g.bench_function(BenchmarkId::new("fold_staged", params), |b| {
            b.iter(|| acc.fold(black_box(&staging), 17.0).expect("fold"))
        });

        let mut acc = FedAvgAccumulator::new(params);
        g.bench_function(BenchmarkId::new("decode_and_fold", params), |b| {
            b.iter(|| {
                decode_all(black_box(&wire), &mut staging);
                acc.fold(&staging, 17.0).expect("fold");
            })
        });
        // What the upload handler really does per update: decode, check every value is
        // finite, hash the payload for the trailer's digest, then fold.
        let mut acc = FedAvgAccumulator::new(params);
        g.bench_function(BenchmarkId::new("verify_decode_and_fold", params), |b| {
            b.iter(|| {
                let mut digest = StreamDigest::default();
                let mut offset = 0;
                for ch in black_box(&wire) {
                    let n = ch.data.len() / 4;
                    let dst = &mut staging[offset..offset + n];
                    decode_le_into(&ch.data, dst);
                    assert!(dst.iter().all(|v| v.is_finite()));
                    digest.update(&ch.data);
                    offset += n;
                }
                black_box(digest.finish_hex());
                acc.fold(&staging, 17.0).expect("fold");
            })
        });
        // The fixed-point sum of plain rounds: a staged update folded on every core.
        let scale = FixedScale::for_round(&[1.0], 1e6);
        let mut fixed = FixedPointAccumulator::new(params, scale).expect("the sum's memory");
        g.bench_function(BenchmarkId::new("fold_fixed", params), |b| {
            b.iter(|| {
                fixed.fold(black_box(&staging), 17.0).expect("fold");
                fixed.unfold(&staging, 17.0).expect("unfold");
            })
        });
        // A streamed upload as the coordinator handles it: per received chunk, the digest
        // and a fold straight from the chunk's bytes (one thread, as an upload's blocking thread folds it).
        let mut fixed = FixedPointAccumulator::new(params, scale).expect("the sum's memory");
        g.bench_function(BenchmarkId::new("stream_fold", params), |b| {
            b.iter(|| {
                let mut digest = StreamDigest::default();
                let mut offset = 0;
                for ch in black_box(&wire) {
                    digest.update(&ch.data);
                    fixed.fold_le_range(offset, &ch.data, 17.0).expect("fold");
                    offset += ch.data.len() / 4;
                }
                black_box(digest.finish_hex());
            })
        });
        // The same, with each chunk first appended to the upload's spill file (page cache).
        let dir = std::env::temp_dir();
        g.bench_function(BenchmarkId::new("stream_fold_spilled", params), |b| {
            b.iter(|| {
                let spill = UploadSpill::create(&dir).expect("spill file");
                let mut digest = StreamDigest::default();
                let mut offset = 0;
                for ch in black_box(&wire) {
                    spill.append(&ch.data).expect("spill");
                    digest.update(&ch.data);
                    fixed.fold_le_range(offset, &ch.data, 17.0).expect("fold");
                    offset += ch.data.len() / 4;
                }
                black_box(digest.finish_hex());
            })
        });
        // Two uploads streaming at once, each folded chunk by chunk on its own thread (as
        // the upload threads do through a RangeFolder): the same sum, shards locked per chunk.
        // Its GB/s counts both uploads' bytes.
        let fixed = FixedPointAccumulator::new(params, scale).expect("the sum's memory");
        let folder = fixed.folder(17.0).expect("folder");
        g.bench_function(BenchmarkId::new("stream_fold_2_uploads", params), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            let mut digest = StreamDigest::default();
                            let mut offset = 0;
                            for ch in black_box(&wire) {
                                digest.update(&ch.data);
                                folder.fold_le_range(offset, &ch.data).expect("fold");
                                offset += ch.data.len() / 4;
                            }
                            black_box(digest.finish_hex());
                        });
                    }
                });
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
