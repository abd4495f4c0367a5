//! fedra client side: the `fedra-client` sidecar that trains next to a region's data, and
//! the control-plane client behind the `fedra` CLI.
//!
//! Layers: [`trainer`] and [`data`] are local training and know nothing of gRPC;
//! [`session`] runs the sidecar protocol; [`control`] is the data scientist's API;
//! [`wire`] is the only module that converts protobuf messages.

pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod models;
pub mod plan_file;
pub mod session;
pub mod trainer;
pub mod wire;
