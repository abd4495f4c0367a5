//! fedra coordinator: schedules federated training rounds over gRPC, aggregates client
//! updates in O(model) memory, and publishes regional checkpoints with provenance.
//!
//! Layers (folders): domain — [`round`], [`aggregation`], [`plan`], [`model`],
//! [`checkpoint`], [`registry`]; persistence — [`store`] (the only module that speaks SQL); edge —
//! [`grpc`] (the only module that sees protobuf types), [`web`] (the read-only dashboard, the
//! only module that sees axum), [`inproc`] (the fleet API for sidecars in this process,
//! simulations only: the same engine and checks as [`grpc`], buffers instead of chunks);
//! [`config`] and [`launch`] wire them.

pub mod aggregation;
pub mod audit;
pub mod carbon;
pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod crash;
pub mod governance;
pub mod grpc;
pub mod hierarchy;
pub mod ids;
pub mod inproc;
pub mod launch;
pub mod leadership;
pub mod model;
pub mod plan;
pub mod privacy;
pub mod registry;
pub mod round;
pub mod store;
pub mod web;

pub use launch::{Coordinator, LaunchError};
