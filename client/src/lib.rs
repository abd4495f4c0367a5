//! fedra's client sidecar, `fedra-client`: it trains next to a region's data and speaks
//! the coordinator's fleet protocol. The data scientist's side (the `fedra` CLI and the
//! control API) is the `fedra-cli` crate, which needs no training code.
//!
//! Layers: [`trainer`], [`models`] and [`data`] are local training and know nothing of
//! gRPC; [`session`] runs the sidecar protocol on [`task::Task`]s over a [`transport`]
//! (gRPC, or a coordinator in the same process for simulations); [`config`] parses the
//! sidecar's file; [`convert`] is the only module that converts protobuf messages.
//! [`compression`] encodes a compressed run's updates into wire chunks (with the
//! `fedra_proto` codecs, as [`session`] chunks uncompressed ones).
//! [`infer`] is the regional inference node, `fedra-infer`.

pub mod compression;
pub mod config;
pub mod convert;
pub mod data;
pub mod infer;
pub mod models;
pub mod session;
pub mod task;
pub mod trainer;
pub mod transport;
