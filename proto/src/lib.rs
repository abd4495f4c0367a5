//! fedra's wire protocol: the code generated from `fedra/v1/fedra.proto` plus the helpers
//! both sides need to move parameter vectors as chunk streams ([`chunking`]) and to write
//! model architectures and layouts ([`model_wire`]).
//!
//! Nothing else belongs here: the types both sides speak live in `fedra-types`, the rest
//! of the domain in the coordinator and client crates, which convert at their gRPC edge.

/// Generated messages, clients and servers of package `fedra.v1`.
///
/// The lint exceptions cover only this generated module: prost and tonic output is not ours
/// to restyle, while the hand-written helpers below get clippy in full.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("fedra.v1");

    /// The encoded `FileDescriptorSet` of `fedra/v1/fedra.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fedra_descriptor.bin"));
}

pub mod chunking;
pub mod codec;
pub mod compressed;
pub mod cost_wire;
pub mod drift_wire;
pub mod model_wire;
pub mod plan_wire;
pub mod serving_wire;
