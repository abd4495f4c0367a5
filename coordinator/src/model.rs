//! Model specifications as the coordinator sees them: a name (checkpoints are listed per
//! name) and a validated architecture whose flat parameter layout is the shared contract.
//! The types are the shared vocabulary (`fedra_types::model`), re-exported here so that
//! `crate::model::TensorLayout` and friends keep resolving. The coordinator never runs a
//! model; clients build the real network from the same spec and refuse a task whose layout
//! differs from theirs.

pub use fedra_types::model::{
    Architecture, ArchitectureError, ConvLayer, ModelError, ModelSpec, TensorLayout, TensorSpec,
};
