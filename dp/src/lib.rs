//! fedra's differential privacy, as pure math: the noise a release adds and the privacy
//! that release costs.
//!
//! * [`noise`]: L2 clipping and exact discrete Gaussian noise from an OS-seeded CSPRNG,
//!   shared by the coordinator (central DP) and the clients (clipping, local DP).
//! * [`accountant`]: turns a run's rounds into an `(ε, δ)` guarantee (zCDP through OpenDP,
//!   Rényi DP of the Poisson-sampled Gaussian mechanism).
//!
//! Why a crate of its own: both sides need the sampler, and neither the sampler nor the
//! accountant has anything to do with the wire protocol, the store or async. Keeping them
//! here, without I/O and under `forbid(unsafe_code)` and the full default clippy set, keeps
//! the code a privacy review must read small and self-contained.

#![forbid(unsafe_code)]

pub mod accountant;
pub mod noise;
