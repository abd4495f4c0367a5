//! The gRPC edge: five tonic services that convert requests ([`convert`]), forward them to
//! the round engine or the store, and convert answers back. Errors of every layer become a
//! `tonic::Status` in one place ([`status`]).

pub mod auth;
mod checkpoint_service;
pub mod convert;
mod fleet_service;
mod governance_service;
#[cfg(test)]
mod hostile_tests;
pub mod limits;
mod privacy_service;
pub mod readiness;
mod registry_service;
mod registry_wire;
mod run_service;
mod status;
mod upload_slots;
pub mod upstream;

pub use auth::{Caller, Gate};
pub use checkpoint_service::CheckpointApi;
pub use fleet_service::FleetApi;
pub(crate) use fleet_service::InFlight;
pub use governance_service::GovernanceApi;
pub use privacy_service::PrivacyApi;
pub use run_service::RunApi;
pub use status::ApiError;
