//! The benchmark's local "training": the received parameters plus a small seeded
//! per-client perturbation, so that every update differs from every other (no client can
//! be deduplicated and the aggregate really is a weighted mean) while local compute stays
//! negligible next to transport and aggregation, which is what the round benchmark
//! measures.

use fedra_client::trainer::{EvalOutcome, TrainError, TrainOutcome, TrainSpec, Trainer};
use fedra_types::metrics::TrainingMetrics;
use std::time::Instant;

/// Perturbation amplitude: updates are `global + AMPLITUDE · u`, `u` uniform in [-1, 1).
pub const AMPLITUDE: f32 = 1e-3;

/// See the module docs. `samples` is 1 (every client weighs the same in FedAvg).
pub struct TrivialTrainer {
    seed: u64,
    round: u32,
}

impl TrivialTrainer {
    /// `client_seed` must differ between clients for their updates to differ.
    pub fn new(client_seed: u64) -> Self {
        Self { seed: client_seed, round: 0 }
    }
}

/// splitmix64: a cheap, good-enough stream of 64-bit values from one seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `global[i] + AMPLITUDE · u_i` with `u_i` uniform in [-1, 1) from `seed`. Two 24-bit
/// uniforms come out of each 64-bit draw.
pub fn perturbed(global: &[f32], seed: u64) -> Vec<f32> {
    const SCALE: f32 = AMPLITUDE * 2.0 / (1u32 << 24) as f32;
    let mut state = seed;
    let mut out = Vec::with_capacity(global.len());
    let mut pairs = global.chunks_exact(2);
    for pair in &mut pairs {
        let r = splitmix(&mut state);
        let (a, b) = ((r >> 40) as u32, ((r >> 16) & 0xFF_FFFF) as u32);
        out.push(pair[0] + a as f32 * SCALE - AMPLITUDE);
        out.push(pair[1] + b as f32 * SCALE - AMPLITUDE);
    }
    for g in pairs.remainder() {
        out.push(g + (splitmix(&mut state) >> 40) as f32 * SCALE - AMPLITUDE);
    }
    out
}

impl Trainer for TrivialTrainer {
    fn train(&mut self, _spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        let started = Instant::now();
        let params = perturbed(global, self.seed ^ (u64::from(self.round) << 40));
        let metrics = TrainingMetrics {
            loss_before: 1.0,
            loss_after: 1.0,
            accuracy_after: 0.0,
            train_seconds: started.elapsed().as_secs_f64(),
        };
        Ok(TrainOutcome { params, samples: 1, metrics })
    }

    fn evaluate(&self, _spec: &TrainSpec, _params: &[f32]) -> Result<(f64, f64), TrainError> {
        Ok((1.0, 0.0))
    }

    fn evaluate_holdout(&self, _spec: &TrainSpec, _params: &[f32]) -> Result<EvalOutcome, TrainError> {
        Err(TrainError::NoHoldout)
    }

    fn samples(&self) -> u64 {
        1
    }

    fn begin_task(&mut self, _run: &str, round: u32) {
        self.round = round;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbation_is_small_seeded_and_differs_between_seeds() {
        let global = vec![0.5f32; 1001];
        let a = perturbed(&global, 1);
        assert_eq!(a, perturbed(&global, 1));
        assert_ne!(a, perturbed(&global, 2));
        assert_eq!(a.len(), global.len());
        assert!(a.iter().all(|v| (v - 0.5).abs() <= AMPLITUDE));
        let mean = a.iter().map(|v| f64::from(v - 0.5)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 1e-4, "{mean}");
    }
}
