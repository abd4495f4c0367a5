//! fedra's shared vocabulary: the types that both sides of the protocol speak — the
//! coordinator, the client sidecar and the `fedra` CLI — defined once so that no side
//! mirrors another's (STYLE habit 2b).
//!
//! Nothing here does I/O: no gRPC, no async runtime, no database, no training framework.
//! Each side converts these types to and from protobuf in its own conversion module; the
//! structural model conversion both share lives in `fedra_proto::model_wire`.
//!
//! - [`audit`]: the audit log's actions, entries and hash chain ([`audit::verify`]).
//! - [`cost`]: [`cost::RegionCost`], what a round cost in one region.
//! - [`drift`]: mergeable per-feature sketches of inputs and their drift (PSI, KS).
//! - [`identity`]: [`identity::Identity`] and [`identity::Role`], who is calling, as a
//!   certificate's SAN URI states it.
//! - [`ids`]: validated identifier newtypes ([`ids::RunId`], [`ids::ClientId`], ...).
//! - [`model`]: architectures, tensor layouts and validated model specs.
//! - [`plan`]: the vocabulary of run plans (strategy, optimizer, local training,
//!   evaluation, differential privacy).
//! - [`metrics`]: [`metrics::TrainingMetrics`], what a client reports about local training.
//! - [`run`]: [`run::RunState`], a run's lifecycle.
//! - [`serving`]: what an inference node reports about the checkpoints it serves.
//! - [`task`]: what a task asks of a client ([`task::TaskKind`], [`task::PrivacyTask`]).

pub mod aggregator;
pub mod audit;
pub mod cost;
pub mod drift;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod run;
pub mod serving;
pub mod task;
