//! Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2):
//! the round's aggregate `y` (FedAvg's mean, or DP-FedAvg's noised release) is not the next
//! model itself; its difference from the global model, Δ = y − x, is a pseudo-gradient the
//! server applies with its own learning rate η and state (see
//! [`fedra_types::plan::Strategy`] for the update rules). A private run's optimizer only
//! post-processes the released aggregate: it costs no ε.
//!
//! Memory: the state is O(model), `f32` like the model (m, and v for every optimizer but
//! FedAvgM): at most 2 × the model on top of the engine's 3 ×. It is written with each
//! round's checkpoint (its digest in the manifest) so that a restart resumes it exactly.

use fedra_types::plan::ServerOptimizer;

/// An optimizer's state after some rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    /// First moment (FedAvgM: the momentum buffer).
    pub m: Vec<f32>,
    /// Second moment; empty for FedAvgM.
    pub v: Vec<f32>,
}

/// The state does not fit the model or the optimizer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServerStateError {
    #[error(
        "server optimizer state has m of {m} and v of {v} values; the model has {len} ({optimizer} needs v: {needs_v})"
    )]
    Shape { m: usize, v: usize, len: usize, optimizer: &'static str, needs_v: bool },
    #[error("the aggregate has {got} values, the model {expected}")]
    Length { expected: usize, got: usize },
    #[error("the server step produced a non-finite value at index {0}")]
    NonFinite(usize),
}

impl ServerState {
    /// The state before the first round: m = 0, v = τ² (the paper's v₋₁).
    pub fn new(opt: &ServerOptimizer, len: usize) -> Self {
        let v = match *opt {
            ServerOptimizer::FedAvgM { .. } => Vec::new(),
            ServerOptimizer::FedAdagrad { tau, .. }
            | ServerOptimizer::FedAdam { tau, .. }
            | ServerOptimizer::FedYogi { tau, .. } => vec![(tau * tau) as f32; len],
        };
        Self { m: vec![0.0; len], v }
    }

    /// Checks that a restored state fits a model of `len` values under `opt`.
    ///
    /// # Errors
    /// [`ServerStateError::Shape`].
    pub fn check(&self, opt: &ServerOptimizer, len: usize) -> Result<(), ServerStateError> {
        let needs_v = opt.has_second_moment();
        if self.m.len() != len || self.v.len() != if needs_v { len } else { 0 } {
            return Err(ServerStateError::Shape {
                m: self.m.len(),
                v: self.v.len(),
                len,
                optimizer: opt.name(),
                needs_v,
            });
        }
        Ok(())
    }
}

/// One server step: with Δ = `aggregate` − `model`, updates `state` and writes the next
/// model into `aggregate`'s buffer (computed in `f64` per coordinate, stored as `f32`).
///
/// # Errors
/// Mismatched lengths, or a non-finite result (nothing is returned then; the round fails).
pub fn step(
    opt: &ServerOptimizer,
    state: &mut ServerState,
    model: &[f32],
    aggregate: &mut [f32],
) -> Result<(), ServerStateError> {
    if aggregate.len() != model.len() {
        return Err(ServerStateError::Length { expected: model.len(), got: aggregate.len() });
    }
    state.check(opt, model.len())?;
    let eta = opt.learning_rate();
    for i in 0..model.len() {
        let x = f64::from(model[i]);
        let delta = f64::from(aggregate[i]) - x;
        let m = f64::from(state.m[i]);
        let next = match *opt {
            ServerOptimizer::FedAvgM { momentum, .. } => {
                let m = momentum * m + delta;
                state.m[i] = m as f32;
                x + eta * m
            }
            ServerOptimizer::FedAdagrad { beta1, tau, .. } => {
                let m = beta1 * m + (1.0 - beta1) * delta;
                let v = f64::from(state.v[i]) + delta * delta;
                (state.m[i], state.v[i]) = (m as f32, v as f32);
                x + eta * m / (v.sqrt() + tau)
            }
            ServerOptimizer::FedAdam { beta1, beta2, tau, .. } => {
                let m = beta1 * m + (1.0 - beta1) * delta;
                let v = beta2 * f64::from(state.v[i]) + (1.0 - beta2) * delta * delta;
                (state.m[i], state.v[i]) = (m as f32, v as f32);
                x + eta * m / (v.sqrt() + tau)
            }
            ServerOptimizer::FedYogi { beta1, beta2, tau, .. } => {
                let m = beta1 * m + (1.0 - beta1) * delta;
                let v0 = f64::from(state.v[i]);
                let d2 = delta * delta;
                let v = v0 - (1.0 - beta2) * d2 * (v0 - d2).signum();
                (state.m[i], state.v[i]) = (m as f32, v as f32);
                x + eta * m / (v.sqrt() + tau)
            }
        };
        if !next.is_finite() {
            return Err(ServerStateError::NonFinite(i));
        }
        aggregate[i] = next as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn adam(eta: f64) -> ServerOptimizer {
        ServerOptimizer::FedAdam { server_learning_rate: eta, beta1: 0.9, beta2: 0.99, tau: 1e-3 }
    }

    #[test]
    fn fed_avg_m_without_momentum_at_rate_one_is_fed_avg() {
        let opt = ServerOptimizer::FedAvgM { server_learning_rate: 1.0, momentum: 0.0 };
        let model = vec![1.0f32, -2.0, 0.5];
        let mean = vec![1.5f32, -1.0, 0.25];
        let mut state = ServerState::new(&opt, 3);
        let mut out = mean.clone();
        step(&opt, &mut state, &model, &mut out).unwrap();
        assert_eq!(out, mean);
    }

    #[test]
    fn momentum_carries_the_last_pseudo_gradient() {
        let opt = ServerOptimizer::FedAvgM { server_learning_rate: 1.0, momentum: 0.5 };
        let mut state = ServerState::new(&opt, 1);
        let mut out = vec![1.0f32];
        step(&opt, &mut state, &[0.0], &mut out).unwrap();
        assert_eq!(out, [1.0]);
        // Δ = 0 now, but half the last step's momentum remains.
        let mut again = vec![1.0f32];
        step(&opt, &mut state, &[1.0], &mut again).unwrap();
        assert_eq!(again, [1.5]);
    }

    #[test]
    fn adam_moves_each_coordinate_by_about_eta_in_the_direction_of_delta() {
        // First step: m = 0.1·Δ, v = τ² + 0.01·Δ², so m/(√v+τ) → 1 for |Δ| ≫ τ.
        let opt = adam(0.01);
        let mut state = ServerState::new(&opt, 2);
        let mut out = vec![5.0f32, -5.0];
        step(&opt, &mut state, &[0.0, 0.0], &mut out).unwrap();
        assert!((out[0] - 0.01).abs() < 1e-4 && (out[1] + 0.01).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn mismatched_state_and_lengths_are_refused() {
        let opt = adam(0.1);
        let mut state = ServerState::new(&ServerOptimizer::FedAvgM { server_learning_rate: 1.0, momentum: 0.9 }, 2);
        let e = step(&opt, &mut state, &[0.0, 0.0], &mut [1.0, 1.0]).unwrap_err();
        assert!(matches!(e, ServerStateError::Shape { needs_v: true, .. }), "{e}");
        let mut state = ServerState::new(&opt, 2);
        assert!(matches!(step(&opt, &mut state, &[0.0], &mut [1.0, 1.0]), Err(ServerStateError::Length { .. })));
    }

    /// The rules written out naively, one coordinate at a time, with the state and the
    /// model kept in f32 between rounds as the engine keeps them.
    fn reference(opt: &ServerOptimizer, model: &[f32], aggregates: &[Vec<f32>]) -> Vec<f32> {
        let n = model.len();
        let mut x = model.to_vec();
        let mut m = vec![0.0f32; n];
        let tau2 = match *opt {
            ServerOptimizer::FedAdagrad { tau, .. }
            | ServerOptimizer::FedAdam { tau, .. }
            | ServerOptimizer::FedYogi { tau, .. } => (tau * tau) as f32,
            ServerOptimizer::FedAvgM { .. } => 0.0,
        };
        let mut v = vec![tau2; n];
        for y in aggregates {
            for i in 0..n {
                let xi = f64::from(x[i]);
                let d = f64::from(y[i]) - xi;
                let (mi, vi) = (f64::from(m[i]), f64::from(v[i]));
                let (mi, vi, next) = match *opt {
                    ServerOptimizer::FedAvgM { server_learning_rate: eta, momentum } => {
                        let mi = momentum * mi + d;
                        (mi, vi, xi + eta * mi)
                    }
                    ServerOptimizer::FedAdagrad { server_learning_rate: eta, beta1, tau } => {
                        let (mi, vi) = (beta1 * mi + (1.0 - beta1) * d, vi + d * d);
                        (mi, vi, xi + eta * mi / (vi.sqrt() + tau))
                    }
                    ServerOptimizer::FedAdam { server_learning_rate: eta, beta1, beta2, tau } => {
                        let (mi, vi) = (beta1 * mi + (1.0 - beta1) * d, beta2 * vi + (1.0 - beta2) * d * d);
                        (mi, vi, xi + eta * mi / (vi.sqrt() + tau))
                    }
                    ServerOptimizer::FedYogi { server_learning_rate: eta, beta1, beta2, tau } => {
                        let mi = beta1 * mi + (1.0 - beta1) * d;
                        let vi = vi - (1.0 - beta2) * d * d * (vi - d * d).signum();
                        (mi, vi, xi + eta * mi / (vi.sqrt() + tau))
                    }
                };
                (m[i], v[i], x[i]) = (mi as f32, vi as f32, next as f32);
            }
        }
        x
    }

    fn optimizers() -> impl Strategy<Value = ServerOptimizer> {
        (1e-3f64..2.0, 0.0f64..0.99, 0.5f64..0.999, 1e-4f64..0.1, 0usize..4).prop_map(|(eta, b1, b2, tau, k)| match k {
            0 => ServerOptimizer::FedAvgM { server_learning_rate: eta, momentum: b1 },
            1 => ServerOptimizer::FedAdagrad { server_learning_rate: eta, beta1: b1, tau },
            2 => ServerOptimizer::FedAdam { server_learning_rate: eta, beta1: b1, beta2: b2, tau },
            _ => ServerOptimizer::FedYogi { server_learning_rate: eta, beta1: b1, beta2: b2, tau },
        })
    }

    proptest! {
        #[test]
        fn steps_match_the_rules_written_out(
            opt in optimizers(),
            model in proptest::collection::vec(-10.0f32..10.0, 1..16),
            rounds in 1usize..5,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let aggregates: Vec<Vec<f32>> =
                (0..rounds).map(|_| model.iter().map(|x| x + rng.random_range(-1.0f32..1.0)).collect()).collect();
            let want = reference(&opt, &model, &aggregates);
            let mut state = ServerState::new(&opt, model.len());
            let mut x = model.clone();
            for y in &aggregates {
                let mut out = y.clone();
                step(&opt, &mut state, &x, &mut out).unwrap();
                x = out;
            }
            prop_assert_eq!(x, want);
        }
    }
}
