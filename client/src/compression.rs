//! Update compression on the sidecar: what a run's `[compression]` asks the client to do to
//! its update Δ = local − global before upload (the wire format and the coordinator's
//! decoder are `fedra_proto::compressed`).
//!
//! - `int8`: per chunk, stochastic 8-bit quantization with one scale; the uniforms come from
//!   ChaCha8 seeded with the task's seed and the client id, so a run reproduces and clients
//!   do not share rounding noise.
//! - `top_k`: error feedback (Stich et al. 2018; Karimireddy et al. 2019). The client keeps
//!   a residual e per run; it sends the k = ⌈fraction·P⌉ coordinates of d = Δ + e with the
//!   largest |dᵢ|, exactly, and keeps e ← d − sent. Nothing is lost, only delayed: sent + e
//!   equals Δ + e_prev coordinate by coordinate.
//!
//! Residuals cost O(model) per run and live in memory only: a sidecar restart loses them
//! (the next top_k update starts again from e = 0, which is what a fresh client does), and
//! at most [`MAX_RESIDUAL_RUNS`] runs keep one (the least recently used is dropped). A
//! residual is replaced only once the coordinator accepted the update it went with: a
//! refused or late update leaves the previous residual in place.

use fedra_proto::compressed::{int8_chunks, sparse_chunks};
use fedra_proto::pb::ParamChunk;
use fedra_types::plan::Compression;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// Runs whose top_k residual a sidecar keeps at once.
pub const MAX_RESIDUAL_RUNS: usize = 4;

/// An encoded update, and the residual to keep if the coordinator accepts it.
#[derive(Debug)]
pub struct Encoded {
    pub chunks: Vec<ParamChunk>,
    /// `top_k`'s new residual e ← d − sent; `None` for the other kinds.
    pub residual: Option<Vec<f32>>,
}

/// The seed of a task's int8 rounding: its task seed mixed with the client id (xxh3 would
/// do as well; FNV-1a keeps this dependency-free and stable across versions).
pub fn rounding_seed(task_seed: u64, client_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    task_seed ^ h ^ 0x696e_7438 // "int8"
}

/// Compresses `delta` (local − global) as `compression` says. `residual` is the run's
/// current top_k residual (ignored unless its length matches).
///
/// # Panics
/// With [`Compression::None`]: the caller sends f32 chunks itself.
pub fn encode(
    compression: Compression,
    mut delta: Vec<f32>,
    chunk_bytes: usize,
    seed: u64,
    residual: Option<&[f32]>,
) -> Encoded {
    match compression {
        Compression::None => panic!("encode is for compressed runs only"),
        Compression::Int8 => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            Encoded { chunks: int8_chunks(&delta, chunk_bytes, || rng.random::<f64>()), residual: None }
        }
        Compression::TopK { .. } => {
            if let Some(e) = residual.filter(|e| e.len() == delta.len()) {
                for (d, e) in delta.iter_mut().zip(e) {
                    *d += e;
                }
            }
            let k = compression.max_sent(delta.len());
            let sent = top_k(&delta, k);
            let pairs: Vec<(usize, f32)> = sent.iter().map(|&i| (i, delta[i])).collect();
            // e ← d − sent: the sent coordinates go out exactly, so they leave nothing.
            for &i in &sent {
                delta[i] = 0.0;
            }
            let total = delta.len();
            Encoded { chunks: sparse_chunks(total, &pairs, chunk_bytes), residual: Some(delta) }
        }
    }
}

/// The indices of the `k` entries of largest magnitude, ascending. Ties go to either side;
/// NaN sorts as largest, so a diverged update is sent (and refused) rather than hidden.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// The sidecar's top_k residuals, per run (see the module doc for their lifetime).
#[derive(Debug, Default)]
pub struct Residuals(VecDeque<(String, Vec<f32>)>);

impl Residuals {
    /// The run's residual, if one is kept.
    pub fn get(&self, run: &str) -> Option<&[f32]> {
        self.0.iter().find(|(r, _)| r == run).map(|(_, e)| e.as_slice())
    }

    /// Keeps `residual` as the run's, most recently used; drops the least recently used
    /// run's beyond [`MAX_RESIDUAL_RUNS`].
    pub fn commit(&mut self, run: &str, residual: Vec<f32>) {
        self.0.retain(|(r, _)| r != run);
        self.0.push_back((run.to_string(), residual));
        while self.0.len() > MAX_RESIDUAL_RUNS {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedra_proto::compressed::UpdateDecoder;
    use proptest::prelude::*;

    fn decode_delta(compression: Compression, chunks: &[ParamChunk], len: usize) -> Vec<f32> {
        let global = vec![0.0f32; len];
        let mut out = vec![f32::NAN; len];
        let mut d = UpdateDecoder::new(compression, len as u64, &global).unwrap();
        for c in chunks {
            d.accept(c, &mut out).unwrap();
        }
        d.finish().unwrap();
        out
    }

    proptest! {
        /// top_k sends the k largest |dᵢ| and nothing smaller than what it kept.
        #[test]
        fn top_k_selects_the_largest(values in proptest::collection::vec(-1e3f32..1e3, 1..500), frac in 0.001f64..=1.0) {
            let c = Compression::TopK { fraction: frac };
            let k = c.max_sent(values.len());
            let sent = top_k(&values, k);
            prop_assert_eq!(sent.len(), k);
            prop_assert!(sent.windows(2).all(|w| w[0] < w[1]));
            let smallest_sent = sent.iter().map(|&i| values[i].abs()).fold(f32::INFINITY, f32::min);
            let largest_kept = (0..values.len())
                .filter(|i| sent.binary_search(i).is_err())
                .map(|i| values[i].abs())
                .fold(0.0f32, f32::max);
            prop_assert!(smallest_sent >= largest_kept, "sent {} < kept {}", smallest_sent, largest_kept);
        }

        /// Error feedback conserves Δ + e: what is sent plus the new residual is exactly
        /// d = Δ + e_prev, coordinate by coordinate, across rounds.
        #[test]
        fn error_feedback_conserves_the_update(
            rounds in proptest::collection::vec(proptest::collection::vec(-10f32..10.0, 64), 1..5),
            frac in 0.01f64..0.5,
            chunk_bytes in 8usize..200,
        ) {
            let c = Compression::TopK { fraction: frac };
            let mut residuals = Residuals::default();
            let mut total_delta = vec![0.0f64; 64];
            let mut total_sent = vec![0.0f64; 64];
            for delta in rounds {
                let prev: Vec<f32> = residuals.get("run").map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; 64]);
                let d: Vec<f32> = delta.iter().zip(&prev).map(|(a, b)| a + b).collect();
                for (t, v) in total_delta.iter_mut().zip(&delta) {
                    *t += f64::from(*v);
                }
                let enc = encode(c, delta, chunk_bytes, 0, residuals.get("run"));
                let sent = decode_delta(c, &enc.chunks, 64);
                let e = enc.residual.unwrap();
                for i in 0..64 {
                    prop_assert_eq!(sent[i] + e[i], d[i]);
                    prop_assert!(sent[i] == 0.0 || e[i] == 0.0);
                }
                for (t, v) in total_sent.iter_mut().zip(&sent) {
                    *t += f64::from(*v);
                }
                residuals.commit("run", e);
            }
            // Σ sent + e_last = Σ Δ (up to the f32 rounding of the running sums).
            let e = residuals.get("run").unwrap();
            for i in 0..64 {
                prop_assert!((total_sent[i] + f64::from(e[i]) - total_delta[i]).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn int8_reproduces_from_its_seed_and_differs_across_clients() {
        let delta: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.7).sin()).collect();
        let a = encode(Compression::Int8, delta.clone(), 256, rounding_seed(5, "eu-1"), None);
        let b = encode(Compression::Int8, delta.clone(), 256, rounding_seed(5, "eu-1"), None);
        let c = encode(Compression::Int8, delta, 256, rounding_seed(5, "eu-2"), None);
        assert_eq!(a.chunks, b.chunks);
        assert_ne!(a.chunks, c.chunks);
        assert!(a.residual.is_none());
    }

    #[test]
    fn residuals_are_bounded_and_replaced() {
        let mut r = Residuals::default();
        for i in 0..=MAX_RESIDUAL_RUNS {
            r.commit(&format!("run-{i}"), vec![i as f32]);
        }
        assert!(r.get("run-0").is_none(), "the least recently used run was dropped");
        r.commit("run-1", vec![9.0]);
        assert_eq!(r.get("run-1"), Some(&[9.0f32][..]));
        // A residual of another model size is ignored.
        let enc = encode(Compression::TopK { fraction: 1.0 }, vec![1.0, 2.0], 64, 0, Some(&[5.0]));
        assert_eq!(decode_delta(Compression::TopK { fraction: 1.0 }, &enc.chunks, 2), vec![1.0, 2.0]);
    }
}
